"""``PLWSFTConfig``: TRL's ``SFTConfig`` with the prompt loss weight keys; ``PLWTrlParser``: TRL's
parser, checking those keys in a YAML config as written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig, TrlParser

from plw_plugins import DEFAULT_PROMPT_LOSS_WEIGHT, PromptLossWeightConfig
from plw_plugins.config import CONFIG_KEYS, HELP, validate_config_value


@dataclass
class PLWSFTConfig(SFTConfig):
    """``SFTConfig`` plus ``prompt_loss_weight``, the weighting-policy keys and the role and
    normalisation keys, validated at construction by the core's ``PromptLossWeightConfig``.
    Round-trips through ``to_dict()`` and ``TrlParser``."""

    prompt_loss_weight: float = field(default=DEFAULT_PROMPT_LOSS_WEIGHT, metadata={"help": HELP["prompt_loss_weight"]})
    prompt_loss_weight_policy: str = field(default="constant", metadata={"help": HELP["prompt_loss_weight_policy"]})
    prompt_loss_weight_final: float | None = field(default=None, metadata={"help": HELP["prompt_loss_weight_final"]})
    completion_loss_weight: float = field(default=1.0, metadata={"help": HELP["completion_loss_weight"]})
    system_loss_weight: float | None = field(default=None, metadata={"help": HELP["system_loss_weight"]})
    tool_loss_weight: float | None = field(default=None, metadata={"help": HELP["tool_loss_weight"]})
    template_loss_weight: float | None = field(default=None, metadata={"help": HELP["template_loss_weight"]})
    history_loss_weight: float | None = field(default=None, metadata={"help": HELP["history_loss_weight"]})
    loss_normalization: str = field(default="weight_sum", metadata={"help": HELP["loss_normalization"]})

    def __post_init__(self) -> None:
        self.prompt_loss_weight_config()
        super().__post_init__()

    def prompt_loss_weight_config(self) -> PromptLossWeightConfig:
        """The validated core configuration of these keys."""
        return PromptLossWeightConfig(**{key: getattr(self, key) for key in CONFIG_KEYS})


class PLWTrlParser(TrlParser):
    """``TrlParser`` that checks the prompt loss weight keys of a ``--config`` YAML on the values as
    written: TRL makes them argparse defaults, and argparse converts a string default as it converts
    a flag, so ``prompt_loss_weight: "0.1"`` would pass as 0.1 (flags themselves are text and convert)."""

    def set_defaults_with_config(self, **kwargs: Any) -> list[str]:
        for key in CONFIG_KEYS:
            if key in kwargs:
                validate_config_value(key, kwargs[key])
        return super().set_defaults_with_config(**kwargs)
