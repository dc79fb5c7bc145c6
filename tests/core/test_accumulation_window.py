"""AccumulationWindow: a host that divides each micro-batch's loss by its accumulation factor and sees
one micro-batch at a time gets, after the window's gradient factor, the gradient of the whole step."""

from __future__ import annotations

import pytest
import torch

from plw_plugins import build_loss_masks, prompt_weighted_loss
from plw_plugins.normalization import AccumulationWindow, scale_gradients

from .batches import padded_batch

VOCAB = 11
PLW = 0.3


def micro_batches(prompt_lengths: list[list[int]]):
    generator = torch.Generator().manual_seed(0)
    return [padded_batch(generator, [6] * len(prompts), prompts, VOCAB) for prompts in prompt_lengths]


def masks_of(batch):
    return build_loss_masks(batch.input_ids, batch.labels, **batch.mask_kwargs())


def accumulated_gradient(batches, host_division: int) -> tuple[torch.Tensor, list[float], torch.Tensor]:
    """What a host like Lightning produces: each micro-batch's loss divided by ``host_division`` and
    backpropagated into one gradient, then the window's factor."""
    logits = torch.randn(sum(len(b.input_ids) for b in batches), 6, VOCAB, generator=torch.Generator().manual_seed(1))
    parameter = logits.clone().requires_grad_(True)
    window, readings, row = AccumulationWindow(), [], 0
    for batch in batches:
        masks = masks_of(batch)
        rows = slice(row, row + len(batch.input_ids))
        row = rows.stop
        normalizer = window.normalizer(masks.weight_sum(PLW), host_division)
        loss = window.reading(prompt_weighted_loss(parameter[rows], masks, PLW, normalizer=normalizer))
        readings.append(float(loss.detach()))
        (loss / host_division).backward()
    factor = window.gradient_factor()
    if factor is not None:
        scale_gradients([parameter], factor)
    return parameter.grad, readings, logits


def test_window_gradient_is_the_whole_steps_and_readings_are_per_micro_batch_means():
    batches = micro_batches([[1, 2, 5], [4]])  # very different W
    gradient, readings, logits = accumulated_gradient(batches, host_division=3)  # a shorter window than the factor

    whole = logits.clone().requires_grad_(True)
    masks = [masks_of(b) for b in batches]
    combined = build_loss_masks(
        torch.cat([b.input_ids for b in batches]), torch.cat([b.labels for b in batches]),
        attention_mask=torch.cat([b.attention_mask for b in batches]),
    )
    prompt_weighted_loss(whole, combined, PLW).loss.backward()
    torch.testing.assert_close(gradient, whole.grad, rtol=1e-5, atol=1e-7)
    own = [float(prompt_weighted_loss(logits[r], m, PLW).loss) for r, m in zip([slice(0, 3), slice(3, 4)], masks)]
    assert readings == pytest.approx(own, rel=1e-6)


def test_a_window_of_zero_weight_gives_zero_gradient_not_nan():
    batches = micro_batches([[6, 6], [6]])  # prompt-only rows
    window = AccumulationWindow()
    for batch in batches:
        window.normalizer(masks_of(batch).weight_sum(0.0), 2)
    factor = window.gradient_factor()
    assert factor is not None and float(factor) == 1.0


def test_one_undivided_micro_batch_needs_no_rescaling_and_an_empty_window_none():
    window = AccumulationWindow()
    assert window.gradient_factor() is None
    window.normalizer(torch.tensor(5.0), 1)
    assert window.gradient_factor() is None


def test_a_factor_changed_inside_a_window_is_refused():
    window = AccumulationWindow()
    window.normalizer(torch.tensor(5.0), 2)
    with pytest.raises(RuntimeError, match="divided this accumulation window's micro-batch losses by 2, then by 4"):
        window.normalizer(torch.tensor(3.0), 4)
