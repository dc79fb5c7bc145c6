"""The prompt loss weight for Axolotl: add the plugin and the key to the YAML::

    plugins:
      - plw_plugins.integrations.axolotl.PromptLossWeightPlugin
    prompt_loss_weight: 0.1        # in [0, 1]; 0 = completion only, 1 = every token

Keys (validated by Axolotl, a bad value stops the run naming the key): ``prompt_loss_weight``
(default 0.1), ``prompt_loss_weight_policy`` (``constant``, ``linear``, ``cosine`` or a registered
policy) and ``prompt_loss_weight_final`` (the end value of a schedule); on ``type: chat_template``
data also ``system_loss_weight``, ``tool_loss_weight``, ``template_loss_weight``,
``history_loss_weight``, ``completion_loss_weight`` and ``loss_normalization``, and a ``weight``
on any message in the data (``chat_roles``). Logs ``prompt_loss`` and ``completion_loss`` (mean NLL
per class), ``system_loss``, ``tool_loss``, ``template_loss``, ``history_loss`` where the data has
those roles, and ``prompt_loss_weight`` next to Axolotl's metrics.

Importing this package needs no Axolotl; ``PromptLossWeightPlugin`` is imported on first access.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PromptLossWeightPlugin"]


def __getattr__(name: str) -> Any:
    if name == "PromptLossWeightPlugin":
        from .plugin import PromptLossWeightPlugin

        return PromptLossWeightPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
