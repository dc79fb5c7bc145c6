"""Axolotl's collators, plus a per-sample ``prompt_mask`` batch key.

Inside a packed batch, padding cannot be told from prompt: Axolotl gives padding the position ids
0, 1, 2, ... of a new sequence, may drop the attention mask, and many Llama tokenizers pad with
their eos token. The collator is the last place that still sees each sample on its own, so the
mask is built there, per sample, before Axolotl pads and packs: 1 on every token of the sample
but its first (nothing in the sample predicts the first, and the previous packed sample must not),
0 on padding. The core (``build_loss_masks_from_batch``) reads it as the batch key ``prompt_mask``.
Built inside the collator, the key never passes through Axolotl's dataset column filtering.

Conversations also carry the per-token columns ``plw_roles`` and ``plw_message_weights`` from
tokenization (``conversation_tokens``); the collator takes them off each sample before Axolotl
pads and packs, and lays them out exactly as ``input_ids``: concatenated per packed row, padded with
``Role.PROMPT`` and ``NO_MESSAGE_WEIGHT``. ``plw_message_weights`` is left out of a batch in which no
message has a weight, so that such a batch is weighted as one without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from axolotl.utils.collators import (
    BatchSamplerDataCollatorForSeq2Seq,
    DataCollatorForSeq2Seq,
    V2BatchSamplerDataCollatorForSeq2Seq,
)

from plw_plugins.roles import MESSAGE_WEIGHTS_KEY, NO_MESSAGE_WEIGHT, ROLES_KEY, Role

PROMPT_MASK_KEY = "prompt_mask"
ROLE_COLUMNS = {ROLES_KEY: (int(Role.PROMPT), torch.long), MESSAGE_WEIGHTS_KEY: (NO_MESSAGE_WEIGHT, torch.float32)}
"""The per-token columns of conversations, with the padding value and dtype of each."""


def sample_prompt_mask(length: int) -> list[int]:
    """The prompt mask of one sample of ``length`` tokens: every token but the first may be a target."""
    return [0] + [1] * (length - 1) if length > 0 else []


def padded_rows(rows: Sequence[Sequence[float]], width: int, padding_side: str, fill: float,
                dtype: torch.dtype) -> torch.Tensor:
    """``[len(rows), width]``: each row's values placed as the collator places its tokens, ``fill`` elsewhere."""
    batch = torch.full((len(rows), width), fill, dtype=dtype)
    for index, row in enumerate(rows):
        if len(row) > width:
            raise ValueError(f"batch row {index} holds {len(row)} tokens but the collated batch is {width} wide")
        if len(row):
            start = width - len(row) if padding_side == "left" else 0
            batch[index, start : start + len(row)] = torch.tensor(row, dtype=dtype)
    return batch


def padded_prompt_mask(rows: Sequence[Sequence[int]], width: int, padding_side: str) -> torch.Tensor:
    """``[len(rows), width]`` masks, each row the concatenation of its samples' masks, padded with 0.

    ``rows`` holds, per batch row, the lengths of the samples packed into it, in order.
    """
    masks = [[bit for length in lengths for bit in sample_prompt_mask(length)] for lengths in rows]
    return padded_rows(masks, width, padding_side, 0, torch.long)


class PromptMaskMixin:
    """Adds ``prompt_mask`` (and a conversation's ``plw_roles`` / ``plw_message_weights``) to the
    batch that Axolotl's own collator builds."""

    packs_samples = False
    """Whether the collator concatenates the samples of each feature list into one row."""

    def __call__(self, features: list[Any], return_tensors: str | None = None) -> dict[str, Any]:
        packs = self._packs(features)
        rows = [[len(sample["input_ids"]) for sample in pack] for pack in packs]  # before the parent pads in place
        columns = take_role_columns(packs)
        batch = super().__call__(features, return_tensors=return_tensors)
        width, padding_side = batch["input_ids"].shape[1], self.tokenizer.padding_side
        batch[PROMPT_MASK_KEY] = padded_prompt_mask(rows, width, padding_side)
        for key, values in columns.items():
            fill, dtype = ROLE_COLUMNS[key]
            batch[key] = padded_rows(values, width, padding_side, fill, dtype)
        return batch

    def _packs(self, features: list[Any]) -> list[list[dict[str, Any]]]:
        """The samples of each batch row, in order."""
        if not self.packs_samples:
            return [[feature] for feature in features]
        return features if isinstance(features[0], list) else [features]


def take_role_columns(packs: list[list[dict[str, Any]]]) -> dict[str, list[list[float]]]:
    """Remove the role columns from every sample (Axolotl's padding knows nothing of them) and return
    them per batch row, each sample's cut to its ``input_ids`` as Axolotl's truncation cuts them.

    A sample without them (``None``: a dataset of another type merged with chat data) is prompt with
    no message weight throughout. Empty when no sample carries them; no ``plw_message_weights`` when
    no message has a weight."""
    samples = [sample for pack in packs for sample in pack]
    carried = [key for key in ROLE_COLUMNS if any(sample.get(key) is not None for sample in samples)]
    columns: dict[str, list[list[float]]] = {}
    for key in carried:
        columns[key] = []
        for pack in packs:
            row: list[float] = []
            for sample in pack:
                values, length = sample.pop(key, None), len(sample["input_ids"])
                if values is None:
                    values = [ROLE_COLUMNS[key][0]] * length
                elif len(values) < length:
                    raise ValueError(f"a sample of {length} tokens has only {len(values)} {key}")
                row.extend(list(values)[:length])
            columns[key].append(row)
    for sample in samples:  # a column of Nones only
        for key in ROLE_COLUMNS:
            sample.pop(key, None)
    weights = columns.get(MESSAGE_WEIGHTS_KEY)
    if weights is not None and not any(weight >= 0 for row in weights for weight in row):
        del columns[MESSAGE_WEIGHTS_KEY]
    return columns


class PromptMaskDataCollator(PromptMaskMixin, DataCollatorForSeq2Seq):
    """Axolotl's padding collator (``sample_packing: false``) with ``prompt_mask``."""


class PromptMaskV2BatchSamplerDataCollator(PromptMaskMixin, V2BatchSamplerDataCollatorForSeq2Seq):
    """Axolotl's packing collator (``sample_packing: true``, most models) with ``prompt_mask``."""

    packs_samples = True


class PromptMaskBatchSamplerDataCollator(PromptMaskMixin, BatchSamplerDataCollatorForSeq2Seq):
    """Axolotl's older packing collator (flash-attention models outside its multipack list), with
    ``prompt_mask``."""

    packs_samples = True
