"""W, the weight sum that divides the loss, over a whole optimiser step.

Gradient accumulation and data parallelism split one optimiser step's tokens over micro-batches
and ranks. Dividing each micro-batch's weighted sum by the step's total W (not by its own) makes
the summed gradient independent of the split, as transformers does with ``num_items_in_batch``.
Where the host cannot count the window's W before its first backward, ``AccumulationWindow``
rescales the accumulated gradient once the window is complete.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from .loss import PLWLoss
from .masks import IGNORE_INDEX, build_loss_masks_from_batch
from .roles import LossWeights


def step_weight_sum(
    batches: Iterable[Mapping[str, Tensor]], prompt_loss_weight: float | LossWeights, *,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """W over the micro-batches of one optimiser step on this rank (an fp32 scalar): the weight sum, or
    the count of weighted targets under ``normalization="token_count"``."""
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


class AccumulationWindow:
    """W of an optimiser step for a host that sees its micro-batches one at a time (Lightning).

    Without look-ahead the window's W is known only after its last micro-batch, when every
    micro-batch has already been backpropagated. So each micro-batch's loss is divided by one fixed
    quantity D, the first micro-batch's W summed over ranks and divided by the number of ranks, and
    after the last backward the accumulated gradient is multiplied by ``gradient_factor()``:
    ``D * host_division * ranks / W_window``. ``host_division`` undoes the host's own division of
    every micro-batch's loss (Lightning's ``accumulate_grad_batches``, also in a shorter last window
    of an epoch) and ``ranks`` DDP's averaging, so the step's gradient is
    ``sum_i w_i * grad nll_i / W_window`` over every micro-batch on every rank.

    Every rank must call ``normalizer`` and ``gradient_factor`` at the same points: both may run a
    collective.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the current window (a new run, or a window that ended)."""
        self._divisor: Tensor | None = None
        self._weight_sum: Tensor | None = None
        self._micro_batches = 0
        self._host_division = 1

    def normalizer(self, weight_sum: Tensor, host_division: int = 1) -> Tensor:
        """D for the next micro-batch's loss, whose W on this rank is ``weight_sum``; ``host_division``
        is what the host divides that loss by afterwards."""
        if self._micro_batches == 0:
            divisor = sum_across_ranks(weight_sum.detach().float()) / data_parallel_world_size()
            self._divisor = torch.where(divisor > 0, divisor, torch.ones_like(divisor))
            self._weight_sum = torch.zeros_like(self._divisor)
            self._host_division = host_division
        elif host_division != self._host_division:
            raise RuntimeError(
                f"the host divided this accumulation window's micro-batch losses by {self._host_division}, then by "
                f"{host_division}: the accumulation factor changed inside a window, so its gradient cannot be rescaled"
            )
        self._weight_sum = self._weight_sum + weight_sum.detach().float().to(self._weight_sum.device)
        self._micro_batches += 1
        return self._divisor

    def reading(self, result: PLWLoss) -> Tensor:
        """The loss to hand the host: it reads as this micro-batch's per-token mean on this rank (0 where
        its W is 0) and back-propagates as ``result.loss``, the weighted sum over D."""
        weight_sum = result.weight_sum.to(result.loss.device)
        mean = result.loss.detach() * self._divisor.to(result.loss.device) / torch.where(
            weight_sum > 0, weight_sum, torch.ones_like(weight_sum)
        )
        return mean + (result.loss - result.loss.detach())

    def gradient_factor(self) -> Tensor | None:
        """Ends the window: the factor for its accumulated gradients, or None where none is needed (no
        micro-batch, or a single one that the host did not divide, whose D already was its W)."""
        micro_batches, divisor, host_division = self._micro_batches, self._divisor, self._host_division
        weight_sum = self._weight_sum
        self.reset()
        if micro_batches == 0 or (micro_batches == 1 and host_division == 1):
            return None
        total = sum_across_ranks(weight_sum)
        factor = divisor * host_division * data_parallel_world_size() / total
        # W_window = 0: every weight was 0, so the weighted loss added no gradient to rescale.
        return torch.where(total > 0, factor, torch.ones_like(factor))


def scale_gradients(parameters: Iterable[Tensor], factor: Tensor) -> None:
    """Multiply the gradient of every parameter that has one by ``factor``, in place."""
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad.mul_(factor.to(parameter.grad.device))
