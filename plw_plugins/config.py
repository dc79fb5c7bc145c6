"""The configuration keys every adapter exposes, validated once, and the weights they resolve to at
each point of training."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from .plugins import weight_policies
from .roles import LossWeights, validate_completion_loss_weight, validate_loss_normalization
from .validation import validate_policy_name, validate_prompt_loss_weight

DEFAULT_PROMPT_LOSS_WEIGHT = 0.1
"""The middle of the range (0.01 to 0.5) that Huerta-Enochian & Ko (2024) found best."""

LARGEST_WEIGHT_STEPS = 1000
"""``largest_weight`` asks the policy at this many intervals of training progress."""

HELP = {
    "prompt_loss_weight": (
        "Weight of prompt tokens in the loss, in [0, 1]: 0 trains on completions only, 1 on every token. "
        "The start value of a schedule."
    ),
    "prompt_loss_weight_policy": "How the prompt loss weight evolves over training: constant, linear, cosine, "
    "or a policy registered by a plugin.",
    "prompt_loss_weight_final": "The prompt loss weight at the end of training, for the linear and cosine policies.",
    "completion_loss_weight": "Weight of completion tokens (those the framework trains), in (0, 1]. Default 1.",
    "system_loss_weight": "Weight of the content of system messages, in [0, 1]. Unset: prompt_loss_weight.",
    "tool_loss_weight": "Weight of the content of tool messages (tool results), in [0, 1]. Unset: prompt_loss_weight.",
    "template_loss_weight": "Weight of chat-template scaffolding and special tokens outside every message's content, "
    "in [0, 1]. Unset: prompt_loss_weight.",
    "history_loss_weight": "Weight of assistant turns before the last one, in [0, 1]. Unset: as the framework "
    "labels them (trained: completion_loss_weight; masked: prompt_loss_weight).",
    "loss_normalization": "What divides the weighted loss: 'weight_sum' (the sum of the weights over the optimiser "
    "step) or 'token_count' (the number of tokens of weight above 0, as WIT normalises).",
}


@dataclass(frozen=True)
class PromptLossWeightConfig:
    """``prompt_loss_weight``, the policy keys, and the role and normalisation keys, validated at construction."""

    prompt_loss_weight: float = DEFAULT_PROMPT_LOSS_WEIGHT
    prompt_loss_weight_policy: str = "constant"
    prompt_loss_weight_final: float | None = None
    completion_loss_weight: float = 1.0
    system_loss_weight: float | None = None
    tool_loss_weight: float | None = None
    template_loss_weight: float | None = None
    history_loss_weight: float | None = None
    loss_normalization: str = "weight_sum"
    _policy: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in CONFIG_KEYS:
            object.__setattr__(self, key, validate_config_value(key, getattr(self, key)))
        policies = weight_policies()
        name = self.prompt_loss_weight_policy
        if name not in policies:
            raise ValueError(
                f"prompt_loss_weight_policy={name!r} is not a registered policy; registered: {', '.join(sorted(policies))}"
            )
        if name == "constant" and self.prompt_loss_weight_final is not None:
            raise ValueError(
                f"prompt_loss_weight_final={self.prompt_loss_weight_final} has no effect with "
                "prompt_loss_weight_policy='constant'; choose 'linear' or 'cosine', or drop it"
            )
        object.__setattr__(self, "_policy", policies[name](self))

    def required_final_weight(self) -> float:
        """``prompt_loss_weight_final``, which a schedule cannot do without."""
        if self.prompt_loss_weight_final is None:
            raise ValueError(
                f"prompt_loss_weight_policy={self.prompt_loss_weight_policy!r} needs prompt_loss_weight_final"
            )
        return self.prompt_loss_weight_final

    def weight_at(self, progress: float) -> float:
        """The prompt loss weight at training progress ``progress`` (clamped to [0, 1])."""
        if isinstance(progress, bool) or not isinstance(progress, (int, float)) or math.isnan(progress):
            raise ValueError(f"progress must be a number in [0, 1], got {progress!r}")
        weight = self._policy.weight_at(min(max(float(progress), 0.0), 1.0))
        return validate_prompt_loss_weight(weight, name=f"the weight of policy {self.prompt_loss_weight_policy!r}")

    def loss_weights_at(self, progress: float) -> LossWeights:
        """Every weight at training progress ``progress``: the scheduled prompt loss weight and the
        fixed role weights and normalisation."""
        return LossWeights(
            prompt=self.weight_at(progress),
            completion=self.completion_loss_weight,
            system=self.system_loss_weight,
            tool=self.tool_loss_weight,
            template=self.template_loss_weight,
            history=self.history_loss_weight,
            normalization=self.loss_normalization,
        )

    def largest_weight(self) -> float:
        """The largest weight of a prompt-side token over training: the policy's weight at 1001 evenly
        spaced points of progress, which include both ends, where the built-in policies are largest,
        and the role weights."""
        largest = max(self.weight_at(step / LARGEST_WEIGHT_STEPS) for step in range(LARGEST_WEIGHT_STEPS + 1))
        return max(largest, self.loss_weights_at(0.0).largest())


CONFIG_KEYS: tuple[str, ...] = tuple(f.name for f in fields(PromptLossWeightConfig) if f.init)
"""The user-facing keys, in the order every adapter declares them."""


def _optional_weight(value: object, *, name: str) -> float | None:
    return None if value is None else validate_prompt_loss_weight(value, name=name)


KEY_CHECKS: dict[str, Callable[..., Any]] = {
    "prompt_loss_weight": validate_prompt_loss_weight,
    "prompt_loss_weight_policy": validate_policy_name,
    "prompt_loss_weight_final": _optional_weight,
    "completion_loss_weight": validate_completion_loss_weight,
    "system_loss_weight": _optional_weight,
    "tool_loss_weight": _optional_weight,
    "template_loss_weight": _optional_weight,
    "history_loss_weight": _optional_weight,
    "loss_normalization": validate_loss_normalization,
}
"""The type and range check of each key on its own, before any conversion: what an adapter runs on
the raw value a user wrote (so that a YAML ``true`` or ``"0.1"`` fails as it does in Python)."""


def validate_config_value(key: str, value: object) -> Any:
    """``value`` of the configuration key ``key``, checked on its own; raises a ``ValueError`` that
    names the key and the value. Cross-key checks (policy against final weight) are the config's."""
    if key not in KEY_CHECKS:
        raise KeyError(f"{key!r} is not a prompt loss weight key; the keys are {', '.join(CONFIG_KEYS)}")
    return KEY_CHECKS[key](value, name=key)
