"""The metrics logged beside the loss: token-weighted ``prompt_loss`` / ``completion_loss`` over
every micro-batch since the last log, and TRL's entropy and token accuracy over completion targets."""

from __future__ import annotations

import torch
from torch import Tensor

from plw_plugins import LossMasks, PLWLoss, sum_across_ranks
from plw_plugins.chunked import default_chunk_size


class LossMetrics:
    """Sums NLL and token counts per class over micro-batches (and ranks), so that the logged mean is
    over tokens, not a mean of per-batch means."""

    def __init__(self) -> None:
        self._totals: Tensor | None = None

    def add(self, result: PLWLoss) -> None:
        """Accumulate one call's metrics (detached)."""
        totals = torch.stack([
            result.prompt_loss.detach() * result.prompt_tokens,
            result.prompt_tokens,
            result.completion_loss.detach() * result.completion_tokens,
            result.completion_tokens,
        ]).float()
        self._totals = totals if self._totals is None else self._totals + totals.to(self._totals.device)

    def pop(self, *, across_ranks: bool = True) -> dict[str, float]:
        """``{"prompt_loss": ..., "completion_loss": ...}`` since the last pop, then reset.

        With ``across_ranks`` it sums over data-parallel ranks, a collective: every rank must call it
        (with nothing accumulated, it contributes zeros).
        """
        totals = torch.zeros(4) if self._totals is None else self._totals
        if across_ranks:
            totals = sum_across_ranks(totals)
        self._totals = None
        prompt_sum, prompt_tokens, completion_sum, completion_tokens = totals.tolist()
        metrics = {}
        if prompt_tokens > 0:
            metrics["prompt_loss"] = prompt_sum / prompt_tokens
        if completion_tokens > 0:
            metrics["completion_loss"] = completion_sum / completion_tokens
        return metrics


@torch.no_grad()
def completion_token_statistics(
    hidden_states: Tensor, lm_head_weight: Tensor, lm_head_bias: Tensor | None, masks: LossMasks
) -> tuple[Tensor, Tensor]:
    """``(entropy_sum, correct_tokens)`` of the next-token distributions at completion targets, as
    TRL reports them (``entropy`` and ``mean_token_accuracy`` are these divided by the completion
    count), computed one chunk of rows at a time without keeping any logits."""
    hidden_size = hidden_states.shape[-1]
    rows = hidden_states[:, :-1].reshape(-1, hidden_size)[masks.completion.reshape(-1)]
    targets = masks.targets.reshape(-1)[masks.completion.reshape(-1)]
    entropy_sum = torch.zeros((), dtype=torch.float32, device=hidden_states.device)
    correct = torch.zeros((), dtype=torch.long, device=hidden_states.device)
    chunk = default_chunk_size(lm_head_weight.shape[0])
    for start in range(0, rows.shape[0], chunk):
        logits = torch.nn.functional.linear(rows[start : start + chunk], lm_head_weight, lm_head_bias).float()
        log_probs = torch.log_softmax(logits, dim=-1)
        entropy_sum += -(log_probs.exp() * log_probs).sum()
        correct += (logits.argmax(dim=-1) == targets[start : start + chunk]).sum()
    return entropy_sum, correct
