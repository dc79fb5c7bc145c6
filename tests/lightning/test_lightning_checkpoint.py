"""The callback's state (the schedule's progress) is saved in checkpoints and restored from them."""

from __future__ import annotations

import pytest
from lightning.pytorch import Callback
from plw_lightning_testlib import TinyLM, load_tokenizer, loader, make_batch, trainer

from plw_plugins.integrations.lightning import PromptLossWeight

STEPS = 6
SCHEDULE = dict(prompt_loss_weight=0.1, prompt_loss_weight_policy="linear", prompt_loss_weight_final=0.9)


class WeightRecorder(Callback):
    """The prompt loss weight each training step ran at, by global step (runs after PromptLossWeight)."""

    def __init__(self, plw: PromptLossWeight, stop_at: int | None = None) -> None:
        self.plw, self.stop_at, self.weights = plw, stop_at, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.weights[trainer.global_step] = self.plw.prompt_loss_weight_now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.stop_at:
            trainer.should_stop = True


def run(model_dir, batches, *, stop_at=None, ckpt_path=None):
    plw = PromptLossWeight(**SCHEDULE)
    recorder = WeightRecorder(plw, stop_at)
    fit = trainer(max_steps=STEPS, callbacks=[plw, recorder])
    fit.fit(TinyLM(str(model_dir), learning_rate=0.01), train_dataloaders=loader(batches), ckpt_path=ckpt_path)
    return fit, plw, recorder.weights


def test_resuming_gives_the_weights_of_an_uninterrupted_run(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(tiny_model_dir)
    batches = [make_batch(tokenizer, [r % 5]) for r in range(STEPS + 2)]
    _, _, uninterrupted = run(tiny_model_dir, batches)
    assert sorted(uninterrupted) == list(range(STEPS))
    assert len(set(uninterrupted.values())) == STEPS, "the linear schedule moves every step"

    first, first_plw, before = run(tiny_model_dir, batches, stop_at=STEPS // 2)
    assert first.global_step == STEPS // 2
    checkpoint = tmp_path / "interrupted.ckpt"
    first.save_checkpoint(checkpoint)
    _, resumed_plw, after = run(tiny_model_dir, batches, ckpt_path=checkpoint)

    assert sorted(after) == list(range(STEPS // 2, STEPS))
    assert {**before, **after} == pytest.approx(uninterrupted)
    assert resumed_plw.state_dict()["progress"] == pytest.approx(1.0)

    # validate() from the checkpoint restores the weight of the next step into a fresh callback.
    fresh = PromptLossWeight(**SCHEDULE)
    assert fresh.prompt_loss_weight_now == pytest.approx(uninterrupted[0])
    trainer(callbacks=[fresh]).validate(
        TinyLM(str(tiny_model_dir)), dataloaders=loader(batches[:1]), ckpt_path=checkpoint, verbose=False
    )
    assert fresh.prompt_loss_weight_now == pytest.approx(uninterrupted[STEPS // 2])
    assert fresh.state_dict() == first_plw.state_dict()


def test_state_round_trip_and_changed_configuration_warns():
    saved = PromptLossWeight(**SCHEDULE)
    saved.load_state_dict({"progress": 0.25})
    restored = PromptLossWeight(**SCHEDULE)
    restored.load_state_dict(saved.state_dict())
    assert restored.prompt_loss_weight_now == pytest.approx(0.1 + 0.8 * 0.25)
    assert restored.state_key == saved.state_key == "plw_plugins.PromptLossWeight"

    changed = PromptLossWeight(prompt_loss_weight=0.0, prompt_loss_weight_policy="linear", prompt_loss_weight_final=1.0)
    with pytest.warns(UserWarning, match="resuming with"):
        changed.load_state_dict(saved.state_dict())
    assert changed.prompt_loss_weight_now == pytest.approx(0.25)
