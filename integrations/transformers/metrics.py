"""TRL's entropy and token accuracy over completion targets, for the core's lean path (the
token-weighted ``prompt_loss`` / ``completion_loss`` are the core's ``plw_plugins.metrics.LossMetrics``)."""

from __future__ import annotations

import torch
from torch import Tensor

from plw_plugins import LossMasks
from plw_plugins.chunked import default_chunk_size


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
