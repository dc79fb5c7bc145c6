"""``AxolotlTrainer`` with the prompt-weighted loss of the shared transformers mixin.

The mixin does the work: W (the weight sum of the optimiser step) in place of the label count, the
loss from the hidden states through the core, the ``prompt_loss`` / ``completion_loss`` metrics.
The mixin's ``compute_loss`` replaces Axolotl's, so this class keeps the one piece of Axolotl's
bookkeeping users see in every log: the token counts behind ``tokens/train_per_sec_per_gpu``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from axolotl.core.trainers.base import AxolotlTrainer

from plw_plugins import sum_across_ranks
from plw_plugins.integrations.transformers import PLWForwardOutput, PromptLossWeightTrainerMixin
from plw_plugins.roles import MESSAGE_WEIGHTS_KEY, ROLES_KEY


class PromptLossWeightAxolotlTrainer(PromptLossWeightTrainerMixin, AxolotlTrainer):
    """Axolotl's SFT trainer, training prompt tokens at ``prompt_loss_weight``.

    Reads the keys from its training arguments, which the plugin fills from the YAML.
    """

    def _set_signature_columns_if_needed(self) -> None:
        """Keep a conversation's ``plw_roles`` and ``plw_message_weights`` columns, which transformers
        would drop from unpacked datasets as no argument of the model's forward."""
        super()._set_signature_columns_if_needed()
        if self._signature_columns:
            self._signature_columns += [key for key in (ROLES_KEY, MESSAGE_WEIGHTS_KEY) if key not in self._signature_columns]

    def plw_record_metrics(self, output: PLWForwardOutput, inputs: Mapping[str, Any], mode: str) -> None:
        """Count trainable (labelled) and total token slots, as Axolotl does for its throughput logs."""
        if mode != "train" or not self.args.include_tkps:
            return
        labels = inputs["labels"]
        counts = torch.stack([(labels != -100).sum(), torch.tensor(labels.numel(), device=labels.device)])
        trainable, total = sum_across_ranks(counts).cpu().float().reshape(2, 1)
        if not hasattr(self.state, "tokens"):
            self.state.tokens = {"trainable": torch.zeros(1), "total": torch.zeros(1)}
        self.state.tokens["trainable"] = self.state.tokens["trainable"] + trainable
        self.state.tokens["total"] = self.state.tokens["total"] + total
