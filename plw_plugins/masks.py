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

from .roles import MESSAGE_WEIGHTS_KEY, ROLES_KEY, LossWeights, Role
from .validation import check_same_shape

IGNORE_INDEX = -100


@dataclass(frozen=True)
class LossMasks:
    """Targets and token classes after the causal shift, all of shape ``[B, T - 1]``.

    Position ``t`` is the prediction made from the logit at input position ``t`` of token ``t + 1``.
    ``targets`` holds a real token id wherever ``completion`` or ``prompt`` is set (elsewhere it
    holds an arbitrary valid id, 0, so that it can index a vocabulary safely). ``roles`` (``Role``
    codes) and ``message_weights`` (``NO_MESSAGE_WEIGHT`` where none) are the target tokens' own,
    when the batch carries them.
    """

    targets: Tensor
    completion: Tensor
    prompt: Tensor
    roles: Tensor | None = None
    message_weights: Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        return self.targets.shape

    def weights(self, weights: float | LossWeights) -> Tensor:
        """Per-target fp32 weights (a bare float is the prompt loss weight): ``completion`` on
        completion, ``prompt`` on prompt, refined by role and message weight (see ``LossWeights``), 0
        on targets that are neither."""
        weights = LossWeights.of(weights)
        if self._prompt_weight_only(weights):
            return self.completion.float() + weights.prompt * self.prompt.float()
        per_target = torch.where(self.completion, weights.completion, weights.prompt)
        if self.roles is not None:
            for role, weight in weights.masked_role_weights().items():
                per_target = torch.where(self.prompt & (self.roles == role), weight, per_target)
            if weights.history is not None:
                per_target = torch.where(self.roles == Role.HISTORY, weights.history, per_target)
        if self.message_weights is not None:
            per_target = torch.where(self.message_weights >= 0, self.message_weights.float(), per_target)
        return torch.where(self.completion | self.prompt, per_target, 0.0).float()

    def weight_sum(self, weights: float | LossWeights) -> Tensor:
        """W of these targets, the loss's normaliser: the sum of their weights, or with
        ``normalization="token_count"`` the number of targets of weight above 0."""
        weights = LossWeights.of(weights)
        if weights.normalization == "weight_sum" and self._prompt_weight_only(weights):
            return self.completion.sum().float() + weights.prompt * self.prompt.sum().float()
        per_target = self.weights(weights)
        if weights.normalization == "token_count":
            return (per_target > 0).sum().float()
        return per_target.sum()

    def _prompt_weight_only(self, weights: LossWeights) -> bool:
        """Whether ``weights`` give these targets today's weights, 1 and the prompt loss weight: then W is
        summed per class as before the roles existed, bit for bit (a sum over the targets' weights
        can differ in the last bits), whatever roles a batch carries while no role key is set."""
        if weights.completion != 1.0:
            return False
        if self.roles is not None and (weights.masked_role_weights() or weights.history is not None):
            return False
        return self.message_weights is None or not bool((self.message_weights >= 0).any())

    def to(self, device: torch.device | str) -> LossMasks:
        """The same masks on ``device``."""
        return LossMasks(*(None if mask is None else mask.to(device) for mask in (
            self.targets, self.completion, self.prompt, self.roles, self.message_weights
        )))

    def flatten(self) -> LossMasks:
        """The same masks as one row of ``B * (T - 1)`` targets."""
        return LossMasks(*(None if mask is None else mask.reshape(-1) for mask in (
            self.targets, self.completion, self.prompt, self.roles, self.message_weights
        )))


def build_loss_masks(
    input_ids: Tensor,
    labels: Tensor,
    *,
    attention_mask: Tensor | None = None,
    position_ids: Tensor | None = None,
    prompt_mask: Tensor | None = None,
    roles: Tensor | None = None,
    message_weights: Tensor | None = None,
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
        roles: ``[B, T]`` the ``Role`` of each input token (``plw_roles``), for role weights and metrics.
        message_weights: ``[B, T]`` each input token's message ``weight`` from the data, or
            ``NO_MESSAGE_WEIGHT`` (``plw_message_weights``).
        ignore_index: the label of untrained tokens.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape [batch, tokens], got shape {tuple(input_ids.shape)}")
    check_same_shape("labels", labels, "input_ids", input_ids)
    for name, mask in (("attention_mask", attention_mask), ("position_ids", position_ids), ("prompt_mask", prompt_mask),
                       (ROLES_KEY, roles), (MESSAGE_WEIGHTS_KEY, message_weights)):
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
    return LossMasks(
        targets=targets.long(), completion=completion, prompt=prompt,
        roles=None if roles is None else roles[:, 1:].long(),
        message_weights=None if message_weights is None else message_weights[:, 1:].float(),
    )


BATCH_MASK_KEYS = {
    "attention_mask": "attention_mask",
    "position_ids": "position_ids",
    "prompt_mask": "prompt_mask",
    ROLES_KEY: "roles",
    MESSAGE_WEIGHTS_KEY: "message_weights",
}
"""The optional batch keys the masks read, and the ``build_loss_masks`` argument each one feeds."""


def build_loss_masks_from_batch(batch: Mapping[str, Tensor], *, ignore_index: int = IGNORE_INDEX) -> LossMasks:
    """``build_loss_masks`` from a batch dict as the frameworks collate it (``input_ids``, ``labels``
    and whichever of ``attention_mask``, ``position_ids``, ``prompt_mask``, ``plw_roles``,
    ``plw_message_weights`` it holds)."""
    missing = [key for key in ("input_ids", "labels") if key not in batch]
    if missing:
        raise ValueError(f"the batch has no {' or '.join(missing)}; it has {', '.join(sorted(batch))}")
    masks = {argument: batch[key] for key, argument in BATCH_MASK_KEYS.items() if batch.get(key) is not None}
    return build_loss_masks(batch["input_ids"], batch["labels"], ignore_index=ignore_index, **masks)


def row_has_weighted_prompt(
    labels: Sequence[int], prompt_loss_weight: float, *, ignore_index: int = IGNORE_INDEX
) -> bool:
    """Whether one unpadded row, as a dataset holds it before collation, has a prompt target of weight
    above 0: a masked label after the first token (the first token is never a target) at a prompt
    loss weight above 0. Data preparation that drops rows without a trained label must keep these."""
    return prompt_loss_weight > 0 and any(label == ignore_index for label in labels[1:])
