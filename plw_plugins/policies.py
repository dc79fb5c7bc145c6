"""The built-in weighting policies, registered exactly as a third-party plugin registers its own.

``constant``: the paper's fixed prompt loss weight. ``linear`` and ``cosine``: a schedule that moves
the weight from ``prompt_loss_weight`` at the start of training to ``prompt_loss_weight_final`` at
its end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .config import PromptLossWeightConfig


@dataclass(frozen=True)
class ConstantWeight:
    weight: float

    def weight_at(self, progress: float) -> float:
        return self.weight


@dataclass(frozen=True)
class ScheduledWeight:
    start: float
    end: float
    shape: Callable[[float], float]  # maps progress in [0, 1] to the share of the way from start to end

    def weight_at(self, progress: float) -> float:
        return self.start + (self.end - self.start) * self.shape(progress)


def _linear(progress: float) -> float:
    return progress


def _cosine(progress: float) -> float:
    return (1.0 - math.cos(math.pi * progress)) / 2.0


def _schedule(shape: Callable[[float], float]) -> Callable[[PromptLossWeightConfig], ScheduledWeight]:
    def factory(config: PromptLossWeightConfig) -> ScheduledWeight:
        return ScheduledWeight(config.prompt_loss_weight, config.required_final_weight(), shape)

    return factory


@hookimpl
def register_weight_policies(register: Callable[..., None]) -> None:
    register("constant", lambda config: ConstantWeight(config.prompt_loss_weight))
    register("linear", _schedule(_linear))
    register("cosine", _schedule(_cosine))
