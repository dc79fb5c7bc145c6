"""Axolotl's collators, plus a per-sample ``prompt_mask`` batch key.

Inside a packed batch, padding cannot be told from prompt: Axolotl gives padding the position ids
0, 1, 2, ... of a new sequence, may drop the attention mask, and many Llama tokenizers pad with
their eos token. The collator is the last place that still sees each sample on its own, so the
mask is built there, per sample, before Axolotl pads and packs: 1 on every token of the sample
but its first (nothing in the sample predicts the first, and the previous packed sample must not),
0 on padding. The core (``build_loss_masks_from_batch``) reads it as the batch key ``prompt_mask``.
Built inside the collator, the key never passes through Axolotl's dataset column filtering.
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

PROMPT_MASK_KEY = "prompt_mask"


def sample_prompt_mask(length: int) -> list[int]:
    """The prompt mask of one sample of ``length`` tokens: every token but the first may be a target."""
    return [0] + [1] * (length - 1) if length > 0 else []


def padded_prompt_mask(rows: Sequence[Sequence[int]], width: int, padding_side: str) -> torch.Tensor:
    """``[len(rows), width]`` masks, each row the concatenation of its samples' masks, padded with 0.

    ``rows`` holds, per batch row, the lengths of the samples packed into it, in order.
    """
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for index, lengths in enumerate(rows):
        row = [bit for length in lengths for bit in sample_prompt_mask(length)]
        if len(row) > width:
            raise ValueError(f"batch row {index} holds {len(row)} tokens but the collated batch is {width} wide")
        if row:
            start = width - len(row) if padding_side == "left" else 0
            mask[index, start : start + len(row)] = torch.tensor(row)
    return mask


class PromptMaskMixin:
    """Adds ``prompt_mask`` to the batch that Axolotl's own collator builds."""

    packs_samples = False
    """Whether the collator concatenates the samples of each feature list into one row."""

    def __call__(self, features: list[Any], return_tensors: str | None = None) -> dict[str, Any]:
        rows = self._sample_lengths(features)  # before the parent pads the features in place
        batch = super().__call__(features, return_tensors=return_tensors)
        padding_side = self.tokenizer.padding_side
        batch[PROMPT_MASK_KEY] = padded_prompt_mask(rows, batch["input_ids"].shape[1], padding_side)
        return batch

    def _sample_lengths(self, features: list[Any]) -> list[list[int]]:
        if not self.packs_samples:
            return [[len(feature["input_ids"])] for feature in features]
        packs = features if isinstance(features[0], list) else [features]
        return [[len(sample["input_ids"]) for sample in pack] for pack in packs]


class PromptMaskDataCollator(PromptMaskMixin, DataCollatorForSeq2Seq):
    """Axolotl's padding collator (``sample_packing: false``) with ``prompt_mask``."""


class PromptMaskV2BatchSamplerDataCollator(PromptMaskMixin, V2BatchSamplerDataCollatorForSeq2Seq):
    """Axolotl's packing collator (``sample_packing: true``, most models) with ``prompt_mask``."""

    packs_samples = True


class PromptMaskBatchSamplerDataCollator(PromptMaskMixin, BatchSamplerDataCollatorForSeq2Seq):
    """Axolotl's older packing collator (flash-attention models outside its multipack list), with
    ``prompt_mask``."""

    packs_samples = True
