"""The YAML keys the plugin adds to Axolotl's configuration, and their checks.

Axolotl silently drops keys that no plugin declares, so the keys are declared here, as a pydantic
model that Axolotl mixes into its own configuration model (``get_input_args``). Its checks
therefore stop the run at config validation, naming the key: the core's check of each key on the
raw YAML value, the core's cross-key checks, and the Axolotl settings whose objective cannot be
combined with a prompt loss weight (``host_settings``). This module needs pydantic only, not Axolotl.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from plw_plugins.config import CONFIG_KEYS, DEFAULT_PROMPT_LOSS_WEIGHT, HELP, PromptLossWeightConfig, validate_config_value

from .host_settings import check_loss_settings


class PromptLossWeightArgs(BaseModel):
    """``prompt_loss_weight``, the policy keys and the role and normalisation keys, as Axolotl config keys.

    Every key is checked by the core on the value the YAML holds, before pydantic converts it (which
    would turn ``true`` into 1.0 and ``"0.1"`` into 0.1): the same check, and the same message, as
    ``PLWSFTConfig`` and the Lightning callback give.
    """

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
    completion_loss_weight: float = Field(
        default=1.0, gt=0.0, le=1.0, json_schema_extra={"description": HELP["completion_loss_weight"]}
    )
    system_loss_weight: float | None = Field(
        default=None, ge=0.0, le=1.0, json_schema_extra={"description": HELP["system_loss_weight"]}
    )
    tool_loss_weight: float | None = Field(
        default=None, ge=0.0, le=1.0, json_schema_extra={"description": HELP["tool_loss_weight"]}
    )
    template_loss_weight: float | None = Field(
        default=None, ge=0.0, le=1.0, json_schema_extra={"description": HELP["template_loss_weight"]}
    )
    history_loss_weight: float | None = Field(
        default=None, ge=0.0, le=1.0, json_schema_extra={"description": HELP["history_loss_weight"]}
    )
    loss_normalization: str = Field(default="weight_sum", json_schema_extra={"description": HELP["loss_normalization"]})

    @field_validator(*CONFIG_KEYS, mode="before")
    @classmethod
    def check_raw_value(cls, value: Any, info: ValidationInfo) -> Any:
        """The core's check of one key, on the value as written."""
        return validate_config_value(info.field_name, value)

    @model_validator(mode="before")
    @classmethod
    def refuse_loss_changing_settings(cls, data: Any) -> Any:
        """Axolotl settings that change the objective cannot be combined with the plugin (``host_settings``)."""
        if isinstance(data, dict):
            check_loss_settings(data)
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
    completion_loss_weight: float = field(default=1.0, metadata={"help": HELP["completion_loss_weight"]})
    system_loss_weight: float | None = field(default=None, metadata={"help": HELP["system_loss_weight"]})
    tool_loss_weight: float | None = field(default=None, metadata={"help": HELP["tool_loss_weight"]})
    template_loss_weight: float | None = field(default=None, metadata={"help": HELP["template_loss_weight"]})
    history_loss_weight: float | None = field(default=None, metadata={"help": HELP["history_loss_weight"]})
    loss_normalization: str = field(default="weight_sum", metadata={"help": HELP["loss_normalization"]})
