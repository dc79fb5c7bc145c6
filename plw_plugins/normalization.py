"""W, the weight sum that divides the loss, over a whole optimiser step.

Gradient accumulation and data parallelism split one optimiser step's tokens over micro-batches
and ranks. Dividing each micro-batch's weighted sum by the step's total W (not by its own) makes
the summed gradient independent of the split, as transformers does with ``num_items_in_batch``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from .masks import IGNORE_INDEX, build_loss_masks_from_batch


def step_weight_sum(
    batches: Iterable[Mapping[str, Tensor]], prompt_loss_weight: float, *, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """W over the micro-batches of one optimiser step on this rank (an fp32 scalar)."""
    total = None
    for batch in batches:
        weight = build_loss_masks_from_batch(batch, ignore_index=ignore_index).weight_sum(prompt_loss_weight)
        total = weight if total is None else total + weight.to(total.device)
    return torch.zeros(()) if total is None else total


def sum_across_ranks(value: Tensor) -> Tensor:
    """``value`` summed over every data-parallel rank; unchanged outside ``torch.distributed``.

    Every rank must call it at the same step, even with nothing to count, or the collective hangs.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def data_parallel_world_size() -> int:
    """The number of ranks of ``torch.distributed``, 1 outside it."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
