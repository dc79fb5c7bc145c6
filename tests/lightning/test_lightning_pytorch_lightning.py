"""The standalone pytorch_lightning package: its Trainer with its PromptLossWeight binding is exact too."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
from plw_lightning_testlib import (
    TinyLMClassic,
    assert_gradients_close,
    gradients,
    load_model,
    load_tokenizer,
    loader,
    make_batch,
    reference_loss,
    trainer,
)

from plw_plugins.integrations.lightning.pytorch_lightning import PromptLossWeight


@pytest.mark.parametrize("plw", [0.0, 0.4])
def test_pytorch_lightning_trainer_step_is_exact(tiny_model_dir, plw):
    batch = make_batch(load_tokenizer(tiny_model_dir), [1, 3, 4])
    module = TinyLMClassic(str(tiny_model_dir))
    fit = trainer(pl.Trainer, max_epochs=1, callbacks=[PromptLossWeight(prompt_loss_weight=plw)])
    fit.fit(module, train_dataloaders=loader([batch]))

    reference = load_model(tiny_model_dir)
    expected = reference_loss(reference, batch, plw)
    assert module.step_losses == [pytest.approx(float(expected.detach()), rel=1e-5)]
    assert_gradients_close(module.first_gradients, gradients(reference, expected), rtol=1e-4, atol=1e-6)
    assert "train/completion_loss" in fit.logged_metrics and "train/prompt_loss" in fit.logged_metrics
