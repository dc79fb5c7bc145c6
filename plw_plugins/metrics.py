"""The losses users see: mean NLL per token over many loss calls, of prompt and completion tokens
and, where the batches carry roles, of each role that has a metric (``system_loss``, ``tool_loss``,
``template_loss``, ``history_loss``).

Every adapter logs them over a window of calls (micro-batches since the last log, or an epoch),
weighted by tokens rather than by calls, and summed over data-parallel ranks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .loss import PLWLoss
from .normalization import sum_across_ranks
from .roles import METRIC_ROLES, role_metric_name


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
        roles = torch.zeros(2 * len(METRIC_ROLES), device=totals.device)
        if result.role_tokens is not None:
            roles = torch.stack([result.role_nll_sums, result.role_tokens], dim=1).reshape(-1).detach().float()
        totals = torch.cat([totals, roles.to(totals.device)])
        self._totals = totals if self._totals is None else self._totals + totals.to(self._totals.device)

    def reset(self) -> None:
        """Forget what was accumulated."""
        self._totals = None

    def pop(self, *, device: torch.device | str | None = None) -> dict[str, float]:
        """``{"prompt_loss": ..., "completion_loss": ..., "system_loss": ...}`` since the last pop (a class
        or role with no token is left out), summed over data-parallel ranks; then reset.

        The rank sum is a collective: every rank must call it, and a rank that accumulated nothing
        contributes zeros on ``device`` (the one its collective backend needs).
        """
        totals = torch.zeros(4 + 2 * len(METRIC_ROLES), device=device) if self._totals is None else self._totals
        self._totals = None
        values = sum_across_ranks(totals).tolist()
        names = ["prompt_loss", "completion_loss", *map(role_metric_name, METRIC_ROLES)]
        return {name: values[2 * i] / values[2 * i + 1] for i, name in enumerate(names) if values[2 * i + 1] > 0}
