"""A real Trainer step of the tiny Llama: the loss and gradients equal transformers' own losses.

PLW = 0 must give transformers' masked cross-entropy, PLW = 1 its all-token loss, and an intermediate
PLW the token-weighted mix of the two, on every output form the helper accepts.
"""

from __future__ import annotations

import pytest
import torch
from plw_lightning_testlib import (
    TinyLM,
    all_token_labels,
    assert_gradients_close,
    gradients,
    hf_loss,
    load_model,
    load_tokenizer,
    loader,
    make_batch,
    reference_loss,
    trainer,
)

from plw_plugins.integrations.lightning import PromptLossWeight

TOLERANCE = dict(rtol=1e-4, atol=1e-6)


def first_step(model_dir, batches, plw, mode, **trainer_args):
    module = TinyLM(str(model_dir), mode=mode)
    trainer(max_steps=1, callbacks=[PromptLossWeight(prompt_loss_weight=plw)], **trainer_args).fit(
        module, train_dataloaders=loader(batches)
    )
    return module


@pytest.mark.parametrize("mode", ["output", "logits", "lean"])
@pytest.mark.parametrize("plw", [0.0, 1.0])
def test_plw_0_and_1_are_transformers_masked_and_all_token_losses(tiny_model_dir, plw, mode):
    batch = make_batch(load_tokenizer(tiny_model_dir), [0, 3, 4])  # three lengths: padding in two rows
    module = first_step(tiny_model_dir, [batch], plw, mode)

    reference = load_model(tiny_model_dir)
    labels = batch["labels"] if plw == 0.0 else all_token_labels(batch)
    expected = hf_loss(reference, batch, labels)
    assert module.step_losses[0] == pytest.approx(float(expected.detach()), rel=1e-5)
    assert_gradients_close(module.first_gradients, gradients(reference, expected), **TOLERANCE)


def test_fractional_plw_is_the_token_weighted_mix(tiny_model_dir):
    batch = make_batch(load_tokenizer(tiny_model_dir), [1, 2])
    module = first_step(tiny_model_dir, [batch], 0.25, "output")

    reference = load_model(tiny_model_dir)
    expected = reference_loss(reference, batch, 0.25)
    assert module.step_losses[0] == pytest.approx(float(expected.detach()), rel=1e-5)
    assert_gradients_close(module.first_gradients, gradients(reference, expected), **TOLERANCE)


def test_validation_loss_is_the_batch_loss_at_the_weight(tiny_model_dir):
    batch = make_batch(load_tokenizer(tiny_model_dir), [2, 4])
    module = TinyLM(str(tiny_model_dir))
    [metrics] = trainer(callbacks=[PromptLossWeight(prompt_loss_weight=0.3)]).validate(
        module, dataloaders=loader([batch]), verbose=False
    )
    reference = load_model(tiny_model_dir)
    with torch.no_grad():
        expected = reference_loss(reference, batch, 0.3)
        completion = hf_loss(reference, batch, batch["labels"])
    assert module.val_losses == [pytest.approx(float(expected.detach()), rel=1e-5)]
    assert metrics["val/completion_loss"] == pytest.approx(float(completion), rel=1e-5)
