"""Axolotl 0.19 settings that change the training loss, and what the plugin does with each.

The plugin's trainer computes the loss itself, from the model body's hidden states, so every
Axolotl setting that changes how the loss is computed would otherwise be dropped without a word.
Each is listed here once, with the reason, in one of two kinds:

- ``REFUSED``: the setting changes the objective, and its combination with a prompt loss weight is
  not defined; config validation stops the run, naming the setting and saying why.
- ``MEMORY_ONLY``: the setting swaps in a faster or leaner kernel for the same cross-entropy; the
  plugin's own loss is already computed a chunk of rows at a time without the full logits, so the
  objective is unchanged and only that kernel's saving is not used; a warning says so at start-up.

The list was read from Axolotl 0.19's config schema (``axolotl/utils/schemas/``) and its
integrations (``axolotl/integrations/*/args.py`` and ``get_trainer_cls``). This module needs
neither Axolotl nor pydantic: it reads the raw configuration mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

LIGER = "axolotl.integrations.liger.LigerPlugin"
CUT_CROSS_ENTROPY = "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin"
KNOWLEDGE_DISTILLATION = "axolotl.integrations.kd.KDPlugin"
DIFFUSION = "axolotl.integrations.diffusion.DiffusionPlugin"
HATCHERY = "axolotl.integrations.hatchery.HatcheryPlugin"


@dataclass(frozen=True)
class HostSetting:
    """One Axolotl setting: how to tell it is on from the raw config, and why it matters."""

    name: str
    """The YAML key (or plugin) as the user wrote it."""
    is_on: Callable[[Mapping[str, Any]], bool]
    reason: str


def _key(name: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda cfg: bool(cfg.get(name))


def _plugin(path: str) -> Callable[[Mapping[str, Any]], bool]:
    module = path.rsplit(".", 1)[0]
    return lambda cfg: any(str(entry).startswith(module) for entry in cfg.get("plugins") or ())


def _key_of_plugin(name: str, plugin: str, default: bool = False) -> Callable[[Mapping[str, Any]], bool]:
    """A key that only acts when its plugin is listed (Axolotl drops it otherwise)."""
    listed = _plugin(plugin)
    return lambda cfg: listed(cfg) and bool(default if cfg.get(name) is None else cfg.get(name))


REFUSED: tuple[HostSetting, ...] = (
    HostSetting(
        "train_on_inputs: true", _key("train_on_inputs"),
        "it trains every prompt token at full weight, leaving no prompt for prompt_loss_weight to weigh. Remove "
        "train_on_inputs (the plugin needs Axolotl's prompt masking) and set prompt_loss_weight: 1.0 to train on "
        "every token",
    ),
    HostSetting(
        "rl", _key("rl"),
        "the prompt loss weight applies to supervised fine-tuning only; remove the plugin for rl runs",
    ),
    HostSetting(
        "reward_model", _key("reward_model"),
        "a reward model is trained on a pairwise loss, not on next-token prediction; remove the plugin",
    ),
    HostSetting(
        "process_reward_model", _key("process_reward_model"),
        "a process reward model is trained as a token classifier, not on next-token prediction; remove the plugin",
    ),
    HostSetting(
        "use_eaft", _key("use_eaft"),
        "Entropy-Aware Focal Training re-weights each token's loss by the model's entropy there; its combination "
        "with a prompt loss weight is not defined, and the plugin's trainer would silently drop it. Use one or "
        "the other",
    ),
    HostSetting(
        "liger_use_token_scaling", _key_of_plugin("liger_use_token_scaling", LIGER),
        "it multiplies each token's loss by its predicted probability, a different objective that the plugin's "
        "trainer would silently drop; remove it",
    ),
    HostSetting(
        "kd_trainer", _key_of_plugin("kd_trainer", KNOWLEDGE_DISTILLATION),
        "knowledge distillation trains on a divergence from a teacher's logits with its own trainer and collator; "
        "its combination with a prompt loss weight is not defined. Use one or the other",
    ),
    HostSetting(
        "trainer_cls", _key("trainer_cls"),
        "the plugin supplies the trainer (Axolotl's trainer with the prompt-weighted loss), so a custom trainer "
        "class would be ignored; subclass plw_plugins.integrations.axolotl.trainer.PromptLossWeightAxolotlTrainer "
        "in a plugin of your own instead",
    ),
    HostSetting(
        DIFFUSION, _plugin(DIFFUSION),
        "it trains a masked-diffusion objective with its own trainer, not next-token prediction; use one or the other",
    ),
    HostSetting(
        HATCHERY, _plugin(HATCHERY),
        "it trains on a remote backend with the loss of its own loss_fn; use one or the other",
    ),
)

MEMORY_ONLY: tuple[HostSetting, ...] = (
    HostSetting("liger_fused_linear_cross_entropy", _key_of_plugin("liger_fused_linear_cross_entropy", LIGER),
                "Liger's fused linear cross-entropy"),
    HostSetting("liger_cross_entropy", _key_of_plugin("liger_cross_entropy", LIGER), "Liger's cross-entropy kernel"),
    HostSetting("cut_cross_entropy", _key_of_plugin("cut_cross_entropy", CUT_CROSS_ENTROPY, default=True),
                "Cut Cross-Entropy's fused loss"),
    HostSetting("chunked_cross_entropy", _key("chunked_cross_entropy"), "Axolotl's chunked cross-entropy"),
    HostSetting("flash_attn_cross_entropy", _key("flash_attn_cross_entropy"), "flash-attn's cross-entropy kernel"),
)


def check_loss_settings(cfg: Mapping[str, Any]) -> None:
    """Raise a ``ValueError`` naming the first setting of ``REFUSED`` that ``cfg`` turns on, and why."""
    for setting in REFUSED:
        if setting.is_on(cfg):
            raise ValueError(f"{setting.name} cannot be combined with the prompt loss weight plugin: {setting.reason}")


def memory_only_warnings(cfg: Mapping[str, Any]) -> list[str]:
    """One sentence per setting of ``MEMORY_ONLY`` that ``cfg`` turns on."""
    return [
        f"{setting.name}: {setting.reason} does not apply beside the prompt loss weight plugin, which computes its "
        "own loss from the hidden states a chunk of rows at a time (the full logits are never built). The "
        "objective is unchanged; only that kernel's memory and speed saving on the loss is not used."
        for setting in MEMORY_ONLY
        if setting.is_on(cfg)
    ]
