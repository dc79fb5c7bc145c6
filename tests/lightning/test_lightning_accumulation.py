"""Gradient accumulation: an optimiser step over micro-batches equals one step over the batch of all of them.

The callback divides each micro-batch's loss by a fixed quantity and rescales the accumulated
gradients to the window's W in ``on_before_optimizer_step``, before Lightning clips them. So with
micro-batches of very different W the parameters after the step, clipping included, are those of a
single batch holding every micro-batch's rows; per-micro-batch normalisation would miss them by far.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from lightning.pytorch.callbacks import GradientAccumulationScheduler
from plw_lightning_testlib import (
    TinyLM,
    TinyLMClassic,
    all_token_labels,
    assert_gradients_close,
    concatenated,
    gradients,
    hf_loss,
    load_model,
    load_tokenizer,
    loader,
    max_gradient_difference,
    padded_batches,
    parameters,
    reference_loss,
    trainer,
)

from plw_plugins.integrations.lightning import PromptLossWeight
from plw_plugins.integrations.lightning.pytorch_lightning import PromptLossWeight as ClassicPromptLossWeight

PARAMETERS = dict(rtol=0.0, atol=1e-6)
GRADIENTS = dict(rtol=1e-4, atol=1e-6)
LEARNING_RATE = 1.0
CLIP = 0.05  # well below the gradient norms of these batches, so clipping changes the step
UNEQUAL = [[0, 1, 3], [4]]  # the first micro-batch has several times the weight of the second


def fit(model_dir, batches, plw, module_class=TinyLM, trainer_class=None, callback_class=PromptLossWeight, **args):
    module = module_class(str(model_dir), learning_rate=LEARNING_RATE)
    extra = {} if trainer_class is None else {"trainer_class": trainer_class}
    fitted = trainer(**extra, max_epochs=1, callbacks=[callback_class(prompt_loss_weight=plw)], **args)
    fitted.fit(module, train_dataloaders=loader(batches))
    return module, fitted


def per_micro_batch_mean(model_dir, micro_batches, plw):
    """What per-micro-batch normalisation gives: the mean of each micro-batch's own-W gradient."""
    reference = load_model(model_dir)
    each = [gradients(reference, reference_loss(reference, batch, plw)) for batch in micro_batches]
    return {name: sum(g[name] for g in each) / len(each) for name in each[0]}


@pytest.mark.parametrize(("plw", "clip"), [(0.0, None), (0.5, None), (1.0, None), (0.5, CLIP)])
def test_accumulated_step_equals_one_batch_of_both(tiny_model_dir, plw, clip):
    micro_batches = padded_batches(load_tokenizer(tiny_model_dir), UNEQUAL)
    whole = concatenated(micro_batches)
    accumulated, _ = fit(tiny_model_dir, micro_batches, plw, accumulate_grad_batches=2, gradient_clip_val=clip)
    single, _ = fit(tiny_model_dir, [whole], plw, gradient_clip_val=clip)

    assert_gradients_close(accumulated.first_gradients, single.first_gradients, **GRADIENTS)
    assert_gradients_close(parameters(accumulated), parameters(single), **PARAMETERS)
    # The whole batch's gradient is transformers' own loss on it (masked or all-token at PLW 0 and 1).
    reference = load_model(tiny_model_dir)
    if plw in (0.0, 1.0):
        expected = hf_loss(reference, whole, whole["labels"] if plw == 0.0 else all_token_labels(whole))
    else:
        expected = reference_loss(reference, whole, plw)
    assert_gradients_close(single.first_gradients, gradients(reference, expected), **GRADIENTS)
    assert max_gradient_difference(per_micro_batch_mean(tiny_model_dir, micro_batches, plw), single.first_gradients) > 100 * 1e-6
    if clip is not None:
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in single.first_gradients.values()]))
        assert norm > 2 * clip, f"the gradient norm {float(norm)} is not clipped by {clip}"
        unclipped, _ = fit(tiny_model_dir, [whole], plw)
        assert max_gradient_difference(parameters(unclipped), parameters(single)) > 100 * PARAMETERS["atol"]


def test_returned_and_logged_losses_stay_per_token_means(tiny_model_dir):
    micro_batches = padded_batches(load_tokenizer(tiny_model_dir), UNEQUAL)
    module, fitted = fit(tiny_model_dir, micro_batches, 0.3, accumulate_grad_batches=2)

    reference = load_model(tiny_model_dir)
    with torch.no_grad():
        expected = [float(reference_loss(reference, batch, 0.3)) for batch in micro_batches]
        whole = concatenated(micro_batches)
        completion = float(hf_loss(reference, whole, whole["labels"]))
    assert module.step_losses == [pytest.approx(value, rel=1e-5) for value in expected]
    assert float(fitted.logged_metrics["train/completion_loss"]) == pytest.approx(completion, rel=1e-5)


def test_shorter_last_window_of_an_epoch_is_exact(tiny_model_dir):
    """Three micro-batches with accumulate_grad_batches=2: the epoch's second step has one micro-batch,
    which Lightning still divides by 2."""
    micro_batches = padded_batches(load_tokenizer(tiny_model_dir), [[0, 1, 3], [4], [2]])
    accumulated, fitted = fit(tiny_model_dir, micro_batches, 0.5, accumulate_grad_batches=2)
    single, _ = fit(tiny_model_dir, [concatenated(micro_batches[:2]), micro_batches[2]], 0.5)

    assert fitted.global_step == 2
    assert_gradients_close(parameters(accumulated), parameters(single), **PARAMETERS)
    # The last step moves the parameters far more than the tolerance, so halving it would show.
    first_step_only, _ = fit(tiny_model_dir, [concatenated(micro_batches[:2])], 0.5)
    assert max_gradient_difference(parameters(first_step_only), parameters(single)) > 100 * PARAMETERS["atol"]


def test_accumulation_factor_set_live_by_the_scheduler_is_exact(tiny_model_dir):
    micro_batches = padded_batches(load_tokenizer(tiny_model_dir), UNEQUAL)
    module = TinyLM(str(tiny_model_dir), learning_rate=LEARNING_RATE)
    callbacks = [PromptLossWeight(prompt_loss_weight=0.5), GradientAccumulationScheduler({0: 2})]
    trainer(max_epochs=1, callbacks=callbacks).fit(module, train_dataloaders=loader(micro_batches))
    single, _ = fit(tiny_model_dir, [concatenated(micro_batches)], 0.5)
    assert_gradients_close(parameters(module), parameters(single), **PARAMETERS)


def test_pytorch_lightning_binding_accumulates_exactly(tiny_model_dir):
    micro_batches = padded_batches(load_tokenizer(tiny_model_dir), UNEQUAL)
    classic = dict(module_class=TinyLMClassic, trainer_class=pl.Trainer, callback_class=ClassicPromptLossWeight)
    accumulated, _ = fit(tiny_model_dir, micro_batches, 0.5, accumulate_grad_batches=2, gradient_clip_val=CLIP, **classic)
    single, _ = fit(tiny_model_dir, [concatenated(micro_batches)], 0.5, gradient_clip_val=CLIP, **classic)
    assert_gradients_close(parameters(accumulated), parameters(single), **PARAMETERS)


class ManualTinyLM(TinyLM):
    """Manual optimisation as the callback documents it: backpropagate the helper's loss as it is and
    step the optimizer of ``self.optimizers()`` every ``accumulate`` batches."""

    accumulate = 2

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        loss = self._loss(batch)
        self.step_losses.append(float(loss.detach()))
        self.manual_backward(loss)
        if (batch_idx + 1) % self.accumulate == 0:
            optimizer.step()
            optimizer.zero_grad()
        return loss


class TwoOptimizerManualTinyLM(ManualTinyLM):
    def configure_optimizers(self):
        head = list(self.model.lm_head.parameters())
        body = [p for p in self.model.parameters() if all(p is not h for h in head)]
        return torch.optim.SGD(body, lr=self.learning_rate), torch.optim.SGD(head, lr=self.learning_rate)


def test_manual_optimisation_accumulating_as_documented_is_exact(tiny_model_dir):
    micro_batches = padded_batches(load_tokenizer(tiny_model_dir), UNEQUAL)
    manual, fitted = fit(tiny_model_dir, micro_batches, 0.5, module_class=ManualTinyLM)
    single, _ = fit(tiny_model_dir, [concatenated(micro_batches)], 0.5)
    assert fitted.global_step == 1
    assert_gradients_close(parameters(manual), parameters(single), **PARAMETERS)


def test_manual_optimisation_with_two_optimizers_is_refused(tiny_model_dir):
    micro_batches = padded_batches(load_tokenizer(tiny_model_dir), UNEQUAL)
    with pytest.raises(ValueError, match="manual optimisation with 2 optimizers.*supports one optimizer"):
        fit(tiny_model_dir, micro_batches, 0.5, module_class=TwoOptimizerManualTinyLM)
