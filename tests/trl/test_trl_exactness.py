"""PLWSFTTrainer against stock SFTTrainer after one SGD step: PLW = 0 is TRL's completion-only
loss, PLW = 1 its train-on-everything loss, in every batch layout TRL builds; a fractional PLW
matches a loss written out by hand; splitting the step into micro-batches changes nothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from trl_harness import (
    LEARNING_RATE,
    alpaca_to_prompt_completion,
    assert_same_parameters,
    conversational,
    initial_parameters,
    parameters,
    train_one_step,
)

from plw_plugins.cli.builtin_data import instruction_rows

LAYOUTS = {
    "padded": {},
    "padding_free": {"padding_free": True, "max_length": None},
    "packing_bfd": {"packing": True, "packing_strategy": "bfd", "max_length": 64},
    "packing_wrapped": {"packing": True, "packing_strategy": "wrapped", "max_length": 64},
}


@pytest.fixture(scope="module")
def rows(toolformer_rows):
    """Real short-completion data (GPTeacher Toolformer), kept short for a tiny model."""
    return alpaca_to_prompt_completion(toolformer_rows[:4])


SHORT = {"max_length": 512}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_plw_0_and_1_equal_stock_losses(layout, rows, tiny_model_dir, tmp_path):
    options = {**SHORT, **LAYOUTS[layout]}
    data = rows if layout == "padded" else instruction_rows(12)
    initial = initial_parameters(tiny_model_dir)
    completion_only = train_one_step(tiny_model_dir, data, tmp_path / "a", plw=None, completion_only_loss=True, **options)
    plw_0 = train_one_step(tiny_model_dir, data, tmp_path / "b", plw=0.0, **options)
    assert_same_parameters(parameters(completion_only), parameters(plw_0), initial)
    everything = train_one_step(tiny_model_dir, data, tmp_path / "c", plw=None, completion_only_loss=False, **options)
    plw_1 = train_one_step(tiny_model_dir, data, tmp_path / "d", plw=1.0, **options)
    assert_same_parameters(parameters(everything), parameters(plw_1), initial)
    # The two stock runs differ, so the comparisons above can tell PLW 0 from PLW 1.
    assert not torch.allclose(parameters(completion_only)["lm_head.weight"], parameters(everything)["lm_head.weight"])


def test_conversational_assistant_only_loss(tiny_model_dir, tmp_path):
    data = conversational(instruction_rows(4))
    initial = initial_parameters(tiny_model_dir)
    assistant_only = train_one_step(tiny_model_dir, data, tmp_path / "a", plw=None, assistant_only_loss=True)
    plw_0 = train_one_step(tiny_model_dir, data, tmp_path / "b", plw=0.0, assistant_only_loss=True)
    assert_same_parameters(parameters(assistant_only), parameters(plw_0), initial)
    everything = train_one_step(tiny_model_dir, data, tmp_path / "c", plw=None, assistant_only_loss=False)
    plw_1 = train_one_step(tiny_model_dir, data, tmp_path / "d", plw=1.0, assistant_only_loss=True)
    assert_same_parameters(parameters(everything), parameters(plw_1), initial)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["padded", "padding_free"])
def test_micro_batch_split_does_not_change_the_step(layout, rows, tiny_model_dir, tmp_path):
    """4 x 1 == 2 x 2 == 1 x 4 (per-device batch x accumulation) at a fractional PLW."""
    options = {**SHORT, **LAYOUTS[layout]}
    initial = initial_parameters(tiny_model_dir)
    runs = [
        parameters(train_one_step(
            tiny_model_dir, rows, tmp_path / f"{b}x{a}", plw=0.3,
            per_device_train_batch_size=b, gradient_accumulation_steps=a, **options,
        ))
        for b, a in ((4, 1), (2, 2), (1, 4))
    ]
    assert_same_parameters(runs[0], runs[1], initial)
    assert_same_parameters(runs[0], runs[2], initial)


def test_model_that_takes_no_loss_kwargs(rows, tiny_model_dir, tmp_path):
    """Axolotl sets ``model_accepts_loss_kwargs=False``; transformers then divides the loss by the
    accumulation steps (before 5.19), which the mixin must undo: 2 x 2 still equals 4 x 1."""

    def no_loss_kwargs(trainer):
        trainer.model_accepts_loss_kwargs = False

    initial = initial_parameters(tiny_model_dir)
    one = train_one_step(tiny_model_dir, rows, tmp_path / "a", plw=0.3, configure=no_loss_kwargs, **SHORT)
    two = train_one_step(
        tiny_model_dir, rows, tmp_path / "b", plw=0.3, configure=no_loss_kwargs,
        per_device_train_batch_size=2, gradient_accumulation_steps=2, **SHORT,
    )
    assert_same_parameters(parameters(one), parameters(two), initial)


def test_fractional_plw_matches_the_loss_written_out(rows, tiny_model_dir, tmp_path):
    """One SGD step of PLWSFTTrainer at PLW = 0.3 equals one step on sum(w * nll) / sum(w), with
    w = 1 on labelled targets and 0.3 on the other real targets, computed here from full logits."""
    from transformers import AutoModelForCausalLM

    plw = 0.3
    trainer = train_one_step(tiny_model_dir, rows, tmp_path / "plw", plw=plw, **SHORT)
    batch = next(iter(trainer.get_train_dataloader()))  # all 4 rows: the same step whatever the order

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["input_ids"][:, 1:]
    labelled = batch["labels"][:, 1:] != -100
    real = batch["attention_mask"][:, 1:].bool()
    weights = torch.where(labelled, 1.0, plw) * real
    assert (weights == plw).any() and (weights == 1.0).any()
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    loss = (weights.reshape(-1) * nll).sum() / weights.sum()
    loss.backward()
    expected = {name: (p - LEARNING_RATE * p.grad).detach() for name, p in model.named_parameters()}
    assert_same_parameters(parameters(trainer), expected, initial_parameters(tiny_model_dir))
