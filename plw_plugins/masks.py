"""Which next-token targets are completion, which are prompt, and which are neither.

Every host framework already marks the tokens it trains by giving them a label and every other
token the label ``ignore_index``. A *prompt* token is then a position the framework masked that
still holds a real token which can be predicted: inside the attention mask, not the first token of
a packed sequence, never padding. This one rule needs nothing but what the frameworks produce, so it
holds across frameworks and versions. Its known limit: tokens masked on purpose (chat-template
scaffolding, image placeholders) count as prompt unless the caller passes a truer ``prompt_mask``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .validation import check_same_shape, validate_prompt_loss_weight

IGNORE_INDEX = -100


@dataclass(frozen=True)
class LossMasks:
    """Targets and token classes after the causal shift, all of shape ``[B, T - 1]``.

    Position ``t`` is the prediction made from the logit at input position ``t`` of token ``t + 1``.
    ``targets`` holds a real token id wherever ``completion`` or ``prompt`` is set (elsewhere it
    holds an arbitrary valid id, 0, so that it can index a vocabulary safely).
    """

    targets: Tensor
    completion: Tensor
    prompt: Tensor

    @property
    def shape(self) -> torch.Size:
        return self.targets.shape

    def weights(self, prompt_loss_weight: float) -> Tensor:
        """Per-target fp32 weights: 1 on completion, ``prompt_loss_weight`` on prompt, else 0."""
        plw = validate_prompt_loss_weight(prompt_loss_weight)
        return self.completion.float() + plw * self.prompt.float()

    def weight_sum(self, prompt_loss_weight: float) -> Tensor:
        """W of these tokens: completion count plus ``prompt_loss_weight`` times prompt count."""
        plw = validate_prompt_loss_weight(prompt_loss_weight)
        return self.completion.sum().float() + plw * self.prompt.sum().float()

    def flatten(self) -> LossMasks:
        """The same masks as one row of ``B * (T - 1)`` targets."""
        return LossMasks(self.targets.reshape(-1), self.completion.reshape(-1), self.prompt.reshape(-1))


def build_loss_masks(
    input_ids: Tensor,
    labels: Tensor,
    *,
    attention_mask: Tensor | None = None,
    position_ids: Tensor | None = None,
    prompt_mask: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> LossMasks:
    """Shift once and classify every next-token target as completion, prompt or neither.

    Args:
        input_ids: ``[B, T]`` token ids as the model sees them.
        labels: ``[B, T]`` the framework's labels: the token id where it trains, else ``ignore_index``.
        attention_mask: ``[B, T]`` padding mask; values above 0 are real tokens. Axolotl numbers the
            packed sequences 1, 2, 3...; a change from one number to another starts a new sequence.
        position_ids: ``[B, T]`` positions of packed (padding-free) batches; 0 starts a sequence.
        prompt_mask: ``[B, T]`` optional truer mask of the input tokens that may count as prompt,
            for frameworks that know it before padding and packing (Axolotl). It narrows the rule,
            it never widens it.
        ignore_index: the label of untrained tokens.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape [batch, tokens], got shape {tuple(input_ids.shape)}")
    check_same_shape("labels", labels, "input_ids", input_ids)
    for name, mask in (("attention_mask", attention_mask), ("position_ids", position_ids), ("prompt_mask", prompt_mask)):
        if mask is not None:
            check_same_shape(name, mask, "input_ids", input_ids)

    next_labels = labels[:, 1:]
    completion = next_labels != ignore_index
    predictable = torch.ones_like(completion)
    if attention_mask is not None:
        segment, previous = attention_mask[:, 1:].long(), attention_mask[:, :-1].long()
        # A target is real; with packed segment numbers it must not start a new sequence. After left
        # padding the first real token stays a target, as the frameworks' own labels make it.
        predictable &= (segment > 0) & ((segment == previous) | (previous == 0))
    if position_ids is not None:
        predictable &= position_ids[:, 1:] != 0
    if prompt_mask is not None:
        predictable &= prompt_mask[:, 1:].bool()
    prompt = ~completion & predictable

    targets = torch.where(completion, next_labels, input_ids[:, 1:])
    targets = torch.where(completion | prompt, targets, torch.zeros_like(targets))
    return LossMasks(targets=targets.long(), completion=completion, prompt=prompt)


BATCH_MASK_KEYS = ("attention_mask", "position_ids", "prompt_mask")


def build_loss_masks_from_batch(batch: Mapping[str, Tensor], *, ignore_index: int = IGNORE_INDEX) -> LossMasks:
    """``build_loss_masks`` from a batch dict as the frameworks collate it (``input_ids``, ``labels``
    and whichever of ``attention_mask``, ``position_ids``, ``prompt_mask`` it holds)."""
    missing = [key for key in ("input_ids", "labels") if key not in batch]
    if missing:
        raise ValueError(f"the batch has no {' or '.join(missing)}; it has {', '.join(sorted(batch))}")
    masks = {key: batch[key] for key in BATCH_MASK_KEYS if batch.get(key) is not None}
    return build_loss_masks(batch["input_ids"], batch["labels"], ignore_index=ignore_index, **masks)


def row_has_weighted_prompt(
    labels: Sequence[int], prompt_loss_weight: float, *, ignore_index: int = IGNORE_INDEX
) -> bool:
    """Whether one unpadded row, as a dataset holds it before collation, has a prompt target of weight
    above 0: a masked label after the first token (the first token is never a target) at a prompt
    loss weight above 0. Data preparation that drops rows without a trained label must keep these."""
    return prompt_loss_weight > 0 and any(label == ignore_index for label in labels[1:])
