"""The YAML keys the plugin adds to Axolotl's configuration, and their checks.

Axolotl silently drops keys that no plugin declares, so the keys are declared here, as a pydantic
model that Axolotl mixes into its own configuration model (``get_input_args``). Its range checks
and the cross-key checks below therefore stop the run at config validation, naming the key.
This module needs pydantic only, not Axolotl.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, model_validator

from plw_plugins.config import DEFAULT_PROMPT_LOSS_WEIGHT, HELP, PromptLossWeightConfig

CONFIG_KEYS = ("prompt_loss_weight", "prompt_loss_weight_policy", "prompt_loss_weight_final")


class PromptLossWeightArgs(BaseModel):
    """``prompt_loss_weight`` and the policy keys, as Axolotl config keys."""

    prompt_loss_weight: float = Field(
        default=DEFAULT_PROMPT_LOSS_WEIGHT, ge=0.0, le=1.0,
        json_schema_extra={"description": HELP["prompt_loss_weight"]},
    )
    prompt_loss_weight_policy: str = Field(
        default="constant", json_schema_extra={"description": HELP["prompt_loss_weight_policy"]}
    )
    prompt_loss_weight_final: float | None = Field(
        default=None, ge=0.0, le=1.0, json_schema_extra={"description": HELP["prompt_loss_weight_final"]}
    )

    @model_validator(mode="before")
    @classmethod
    def check_prompt_is_masked(cls, data: Any) -> Any:
        """The plugin weighs the tokens Axolotl masks; with ``train_on_inputs: true`` none are masked."""
        if isinstance(data, dict) and data.get("train_on_inputs"):
            raise ValueError(
                "train_on_inputs: true cannot be combined with the prompt loss weight plugin: it trains every "
                "prompt token at full weight, leaving no prompt for prompt_loss_weight to weigh. Remove "
                "train_on_inputs (the plugin needs Axolotl's prompt masking) and set prompt_loss_weight: 1.0 "
                "to train on every token"
            )
        if isinstance(data, dict) and (data.get("rl") or data.get("reward_model") or data.get("process_reward_model")):
            raise ValueError(
                "the prompt loss weight plugin applies to supervised fine-tuning only; remove it from plugins "
                "for rl, reward_model or process_reward_model runs"
            )
        return data

    @model_validator(mode="after")
    def check_policy(self) -> PromptLossWeightArgs:
        """The policy name must be registered and fit ``prompt_loss_weight_final`` (the core's checks)."""
        PromptLossWeightConfig(**{key: getattr(self, key) for key in CONFIG_KEYS})
        return self


@dataclass
class PromptLossWeightTrainingArgs:
    """The same keys on Axolotl's training arguments, so that the trainer reads them from ``args``
    (and checkpoints record them)."""

    prompt_loss_weight: float = field(default=DEFAULT_PROMPT_LOSS_WEIGHT, metadata={"help": HELP["prompt_loss_weight"]})
    prompt_loss_weight_policy: str = field(default="constant", metadata={"help": HELP["prompt_loss_weight_policy"]})
    prompt_loss_weight_final: float | None = field(default=None, metadata={"help": HELP["prompt_loss_weight_final"]})
