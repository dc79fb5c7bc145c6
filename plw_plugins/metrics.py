"""The prompt and completion losses users see: mean NLL per token over many loss calls.

Every adapter logs them over a window of calls (micro-batches since the last log, or an epoch),
weighted by tokens rather than by calls, and summed over data-parallel ranks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .loss import PLWLoss
from .normalization import sum_across_ranks


class LossMetrics:
    """Sums NLL and token counts per class over calls (and ranks), so that the logged mean is over
    tokens, not a mean of per-call means."""

    def __init__(self) -> None:
        self._totals: Tensor | None = None

    def add(self, result: PLWLoss) -> None:
        """Accumulate one call's metrics (detached)."""
        totals = torch.stack([
            result.prompt_loss * result.prompt_tokens,
            result.prompt_tokens,
            result.completion_loss * result.completion_tokens,
            result.completion_tokens,
        ]).detach().float()
        self._totals = totals if self._totals is None else self._totals + totals.to(self._totals.device)

    def reset(self) -> None:
        """Forget what was accumulated."""
        self._totals = None

    def pop(self, *, device: torch.device | str | None = None) -> dict[str, float]:
        """``{"prompt_loss": ..., "completion_loss": ...}`` since the last pop (a class with no token is
        left out), summed over data-parallel ranks; then reset.

        The rank sum is a collective: every rank must call it, and a rank that accumulated nothing
        contributes zeros on ``device`` (the one its collective backend needs).
        """
        totals = torch.zeros(4, device=device) if self._totals is None else self._totals
        self._totals = None
        prompt_sum, prompt_tokens, completion_sum, completion_tokens = sum_across_ranks(totals).tolist()
        metrics = {}
        if prompt_tokens > 0:
            metrics["prompt_loss"] = prompt_sum / prompt_tokens
        if completion_tokens > 0:
            metrics["completion_loss"] = completion_sum / completion_tokens
        return metrics
