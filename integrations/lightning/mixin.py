"""The module side: ``PromptLossWeightMixin.prompt_weighted_loss``, the loss a ``training_step`` returns.

It imports neither Lightning package, so one mixin serves ``lightning.pytorch`` and
``pytorch_lightning`` modules alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from torch import Tensor, nn

# What the helper says when it finds no callback, and the callback when the helper was never called.
USAGE = (
    "mix PromptLossWeightMixin into the LightningModule, return "
    "self.prompt_weighted_loss(output, batch) from training_step (output: the model's output or its logits; "
    "batch: the dict with input_ids, labels and attention_mask or position_ids), and pass "
    "PromptLossWeight(prompt_loss_weight=...) in Trainer(callbacks=[...])"
)


class PromptLossWeightMixin:
    """Mix into a ``LightningModule`` (``class MyModule(PromptLossWeightMixin, L.LightningModule)``) and
    return ``self.prompt_weighted_loss(output, batch)`` from ``training_step`` and ``validation_step``.

    The weight and the normaliser come from the ``PromptLossWeight`` callback of the module's trainer;
    without one the helper raises, rather than guess a weight.

    Give the model only its inputs, ``self.model(input_ids=batch["input_ids"],
    attention_mask=batch["attention_mask"])``, not ``self.model(**batch)``: ``labels`` would make a
    Hugging Face model compute its own loss besides this one, and ``plw_roles`` /
    ``plw_message_weights`` are for the loss only (a Hugging Face model swallows them unread).
    """

    def prompt_weighted_loss(
        self, output: Any, batch: Mapping[str, Tensor], *, lm_head: Optional[nn.Module] = None
    ) -> Tensor:
        """The prompt-weighted loss of ``batch``, computed by the core at the callback's weight.

        Args:
            output: the model's output for ``batch``: a Hugging Face ``CausalLMOutput`` (its ``logits``
                are used) or a logits tensor ``[batch, tokens, vocab]``. With ``lm_head``: the last
                hidden states instead, as a tensor ``[batch, tokens, hidden]`` or the model body's
                output (``.last_hidden_state``, e.g. ``self.model.model(...)`` for a Hugging Face
                ``*ForCausalLM``).
            batch: the dict the model ran on: ``input_ids``, ``labels`` (``-100`` where the data
                masks the prompt and padding), and ``attention_mask`` or ``position_ids`` (packed);
                for chat data also ``plw_roles`` and ``plw_message_weights``, the role and message
                weight of each token (``plw_plugins.tokenize_conversation`` makes them for a row,
                ``plw_plugins.collate_conversations`` pads them into a batch).
            lm_head: the output layer (e.g. ``self.model.lm_head``) for the memory-lean path, which
                never builds the full logits. The layer must compute exactly ``F.linear(hidden,
                weight, bias)``: a head with a learned logit scale, an output transform or a hook that
                changes its output is refused with a ``ValueError`` (give the logits instead; they
                hold whatever the head does). This path does not score tokens of weight 0, so at a
                prompt loss weight of 0 ``prompt_loss`` is not logged (nor ``system_loss`` at a
                ``system_loss_weight`` of 0...).

        Returns:
            The loss to return from the step, read as the batch's per-token mean (``sum_i w_i * nll_i /
            W`` of this batch on this rank). In training its gradient is scaled so that, once the
            callback has rescaled the accumulated gradients before the optimiser step, the step
            follows ``W`` of the whole step: every micro-batch of the accumulation window on every
            data-parallel rank.
        """
        return _callback_of(self).compute_loss(self.trainer, output, batch, lm_head)


def _callback_of(module: Any) -> Any:
    try:
        trainer = module.trainer
    except RuntimeError:
        trainer = None
    callbacks = [] if trainer is None else [c for c in trainer.callbacks if getattr(c, "computes_prompt_weighted_loss", False)]
    if len(callbacks) != 1:
        found = "no PromptLossWeight callback" if not callbacks else f"{len(callbacks)} PromptLossWeight callbacks"
        where = "the module is not attached to a Trainer" if trainer is None else f"the Trainer has {found}"
        raise RuntimeError(f"prompt_weighted_loss needs exactly one PromptLossWeight callback, but {where}: {USAGE}")
    return callbacks[0]
