"""``PromptLossWeightPlugin``: the prompt loss weight for Axolotl, switched on from the YAML::

    plugins:
      - plw_plugins.integrations.axolotl.PromptLossWeightPlugin
    prompt_loss_weight: 0.1

Axolotl asks each plugin, at fixed points of a run, for its config keys, training arguments,
trainer class and collator; this class answers with the pieces of this package. Everything but
Axolotl's ``BasePlugin`` is imported when Axolotl asks for it.
"""

from __future__ import annotations

from typing import Any

from axolotl.integrations.base import BasePlugin
from axolotl.utils.logging import get_logger

from plw_plugins.config import CONFIG_KEYS
from plw_plugins.roles import ROLES_KEY

from .host_settings import memory_only_warnings

ARGS_MODULE = "plw_plugins.integrations.axolotl.args"
LOG = get_logger(__name__)


class PromptLossWeightPlugin(BasePlugin):
    """Trains prompt tokens at a fractional weight: ``prompt_loss_weight`` in [0, 1]."""

    def register(self, cfg: dict) -> None:
        """Make Axolotl's chat template tokenization also give every token its role (``chat_roles``)."""
        from .chat_roles import install

        install()

    def on_config_validation_error(self, cfg: dict) -> None:
        """The config was rejected: undo ``register``."""
        from .chat_roles import uninstall

        uninstall()

    def get_input_args(self) -> str:
        """The pydantic model of the YAML keys, mixed into Axolotl's config validation."""
        return f"{ARGS_MODULE}.PromptLossWeightArgs"

    def get_training_args_mixin(self) -> str:
        """The dataclass that adds the keys to Axolotl's training arguments."""
        return f"{ARGS_MODULE}.PromptLossWeightTrainingArgs"

    def get_training_args(self, cfg: Any) -> dict[str, Any]:
        """The validated YAML values, copied onto the training arguments the trainer reads.

        Also ``average_tokens_across_devices``, which Axolotl's builder turns off: with it off, each
        rank would divide its loss by its own W, and the step across ranks would not be the step of
        one process over the same rows. On, W is summed over ranks (one process: no effect).
        """
        values = {key: cfg[key] for key in CONFIG_KEYS if cfg.get(key) is not None}
        return {**values, "average_tokens_across_devices": True}

    def get_trainer_cls(self, cfg: Any) -> type:
        """``AxolotlTrainer`` with the prompt-weighted loss."""
        from .trainer import PromptLossWeightAxolotlTrainer

        return PromptLossWeightAxolotlTrainer

    def post_trainer_create(self, cfg: Any, trainer: Any) -> None:
        """Stop a run in which the weighted loss would not be what trains, and say once which of
        Axolotl's fused-loss settings do not apply beside it (``host_settings.MEMORY_ONLY``)."""
        from .trainer import PromptLossWeightAxolotlTrainer

        if not isinstance(trainer, PromptLossWeightAxolotlTrainer):
            raise ValueError(
                f"another plugin supplied the trainer ({type(trainer).__name__}), so the prompt loss weight would not "
                "be applied; the prompt loss weight plugin needs its own trainer: remove one of the two plugins"
            )
        if getattr(getattr(trainer.model, "config", None), "output_router_logits", False):
            raise ValueError(
                "output_router_logits: the MoE load-balancing loss is not supported with the prompt loss weight "
                "plugin (its trainer computes the loss from the hidden states and would drop it); set "
                "output_router_logits: false in the model config overrides"
            )
        for warning in memory_only_warnings(cfg):
            LOG.warning(warning)
        check_role_columns(cfg, trainer.train_dataset, trainer.eval_dataset)

    def get_collator_cls_and_kwargs(self, cfg: Any, is_eval: bool = False) -> tuple[type, dict] | None:
        """Axolotl's own choice of collator, with the per-sample ``prompt_mask`` added.

        ``None`` leaves Axolotl's collator in place where the batch already tells padding from
        prompt: flattened batches (``batch_flattening``) have no padding, and unpacked multimodal
        batches keep their attention mask.
        """
        from .collator import (
            PromptMaskBatchSamplerDataCollator,
            PromptMaskDataCollator,
            PromptMaskV2BatchSamplerDataCollator,
        )

        packed = bool(cfg.eval_sample_packing) if is_eval else bool(cfg.sample_packing)
        if packed and uses_v2_packing(cfg):
            return PromptMaskV2BatchSamplerDataCollator, {}
        if packed:
            return PromptMaskBatchSamplerDataCollator, {}
        if cfg.processor_type or cfg.batch_flattening:
            return None
        return PromptMaskDataCollator, {}


ROLE_KEYS = ("system_loss_weight", "tool_loss_weight", "template_loss_weight", "history_loss_weight")
"""The keys that act only through the roles of chat tokens."""


def check_role_columns(cfg: Any, *datasets: Any) -> None:
    """Stop a run on chat template data whose prepared dataset has no roles: Axolotl reuses a dataset
    prepared earlier (``dataset_prepared_path``) whatever the plugins, so one prepared without the
    plugin would silently lose every role weight and per-message weight. Where the tokenizer cannot
    give roles (``chat_roles.tag_roles``), a role key set would do nothing, and stops the run too."""
    chat = any(str(entry.get("type", "")).startswith("chat_template") for entry in cfg.datasets or ())
    if not chat:
        return
    if cfg.processor_type or cfg.tokenizer_use_mistral_common or cfg.tokenizer_use_fast is False:
        role_keys = [key for key in ROLE_KEYS if cfg.get(key) is not None]
        if role_keys:
            raise ValueError(
                f"{role_keys[0]}: the roles of chat tokens need a fast Hugging Face tokenizer rendering text, and "
                "this run uses a processor, mistral-common or a slow tokenizer; remove the role keys"
            )
        return
    for dataset in datasets:
        columns = getattr(dataset, "column_names", None)
        if columns is not None and ROLES_KEY not in columns:
            raise ValueError(
                f"the prepared dataset has no {ROLES_KEY} column: it was prepared without the prompt loss weight "
                f"plugin (dataset_prepared_path: {cfg.dataset_prepared_path}). Delete it, or set another "
                "dataset_prepared_path, so that Axolotl prepares the chat template data again with the plugin"
            )


def uses_v2_packing(cfg: Any) -> bool:
    """Whether Axolotl packs with its V2 collator for this model and attention (its own rule)."""
    from axolotl.monkeypatch.multipack import SUPPORTED_MULTIPACK_MODEL_TYPES

    return (
        cfg.attn_implementation == "flex_attention"
        or cfg.model_config_type in SUPPORTED_MULTIPACK_MODEL_TYPES
        or (cfg.model_config_type == "llama" and cfg.attn_implementation != "flash_attention_2")
    )
