"""Random batches as the host frameworks collate them, and an independent reference of the loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from plw_plugins import IGNORE_INDEX


@dataclass
class Batch:
    input_ids: torch.Tensor
    labels: torch.Tensor  # completion-only labels
    all_labels: torch.Tensor  # labels of every real token that can be a target (train on everything)
    attention_mask: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None

    def mask_kwargs(self) -> dict:
        kwargs = {}
        if self.attention_mask is not None:
            kwargs["attention_mask"] = self.attention_mask
        if self.position_ids is not None:
            kwargs["position_ids"] = self.position_ids
        return kwargs


def padded_batch(generator: torch.Generator, lengths: list[int], prompt_lengths: list[int], vocab: int,
                 *, left: bool = False) -> Batch:
    """Rows of the given lengths padded to the longest; the first ``prompt_lengths`` tokens of each are prompt."""
    width = max(lengths)
    input_ids = torch.zeros(len(lengths), width, dtype=torch.long)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    all_labels = torch.full_like(input_ids, IGNORE_INDEX)
    attention_mask = torch.zeros_like(input_ids)
    for row, (length, prompt) in enumerate(zip(lengths, prompt_lengths)):
        cols = slice(width - length, width) if left else slice(0, length)
        ids = torch.randint(0, vocab, (length,), generator=generator)
        input_ids[row, cols] = ids
        attention_mask[row, cols] = 1
        all_labels[row, cols] = ids
        row_labels = ids.clone()
        row_labels[:prompt] = IGNORE_INDEX
        labels[row, cols] = row_labels
    return Batch(input_ids, labels, all_labels, attention_mask=attention_mask)


def packed_batch(generator: torch.Generator, lengths: list[int], prompt_lengths: list[int], vocab: int) -> Batch:
    """Rows concatenated into one padding-free row with ``position_ids``, as TRL's padding-free collator
    makes it: the first token of every sequence is never a label."""
    ids, labels, all_labels, positions = [], [], [], []
    for length, prompt in zip(lengths, prompt_lengths):
        row = torch.randint(0, vocab, (length,), generator=generator)
        row_labels = row.clone()
        row_labels[:prompt] = IGNORE_INDEX
        row_all = row.clone()
        row_labels[0] = row_all[0] = IGNORE_INDEX
        ids.append(row), labels.append(row_labels), all_labels.append(row_all), positions.append(torch.arange(length))
    return Batch(torch.cat(ids)[None], torch.cat(labels)[None], torch.cat(all_labels)[None],
                 position_ids=torch.cat(positions)[None])


@st.composite
def batches(draw, *, vocab: int) -> Batch:
    """A padded (left or right) or packed batch of 1-4 sequences, each with a prompt of 0 or more tokens."""
    count = draw(st.integers(1, 4))
    lengths = [draw(st.integers(1, 10)) for _ in range(count)]
    prompt_lengths = [draw(st.integers(0, length)) for length in lengths]
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    layout = draw(st.sampled_from(["right", "left", "packed"]))
    if layout == "packed":
        return packed_batch(generator, lengths, prompt_lengths, vocab)
    return padded_batch(generator, [max(2, n) for n in lengths], prompt_lengths, vocab, left=layout == "left")


def reference_loss(logits: torch.Tensor, batch: Batch, prompt_loss_weight: float) -> torch.Tensor:
    """The loss of DESIGN.md section 2 written out token by token, independently of plw_plugins."""
    total, weight_sum = logits.new_zeros((), dtype=torch.float64), 0.0
    rows, steps = batch.input_ids.shape
    for b in range(rows):
        for t in range(steps - 1):
            label = int(batch.labels[b, t + 1])
            real = int(batch.all_labels[b, t + 1]) != IGNORE_INDEX
            if label != IGNORE_INDEX:
                weight, target = 1.0, label
            elif real:
                weight, target = prompt_loss_weight, int(batch.input_ids[b, t + 1])
            else:
                continue
            nll = -torch.log_softmax(logits[b, t].double(), dim=-1)[target]
            total = total + weight * nll
            weight_sum += weight
    return total / weight_sum if weight_sum > 0 else total
