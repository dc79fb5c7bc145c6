"""Truncation to ``max_length`` with ``truncation_mode="keep_start"``: a prompt that fills
``max_length`` leaves a row without a completion. TRL drops such rows; at a prompt loss weight above 0
their prompt tokens still carry weight, so ``PLWSFTTrainer`` keeps them: PLW 1 then trains what stock
``completion_only_loss=False`` trains, PLW 0 what stock completion-only training trains."""

from __future__ import annotations

import pytest
from trl_harness import assert_same_parameters, initial_parameters, parameters, train_one_step

from plw_plugins.cli.builtin_data import instruction_rows

# Half of these 16 rows have a prompt of at least 29 tokens (with the tiny tokenizer), so keep_start truncation
# leaves them without a completion token.
TRUNCATED = {"max_length": 29, "truncation_mode": "keep_start", "per_device_train_batch_size": 16}


@pytest.fixture(scope="module")
def rows():
    return instruction_rows(16)


def test_plw_1_keeps_prompt_only_rows_as_stock_all_token_training(rows, tiny_model_dir, tmp_path):
    initial = initial_parameters(tiny_model_dir)
    everything = train_one_step(tiny_model_dir, rows, tmp_path / "a", plw=None, completion_only_loss=False, **TRUNCATED)
    plw_1 = train_one_step(tiny_model_dir, rows, tmp_path / "b", plw=1.0, **TRUNCATED)
    completion_only = train_one_step(tiny_model_dir, rows, tmp_path / "c", plw=None, completion_only_loss=True, **TRUNCATED)

    assert len(everything.train_dataset) == len(plw_1.train_dataset) == len(rows)
    assert len(completion_only.train_dataset) <= len(rows) - 4, "too few rows lose their completion to show the fix"
    assert_same_parameters(parameters(everything), parameters(plw_1), initial)


def test_plw_0_drops_them_as_stock_completion_only_training(rows, tiny_model_dir, tmp_path):
    initial = initial_parameters(tiny_model_dir)
    completion_only = train_one_step(tiny_model_dir, rows, tmp_path / "a", plw=None, completion_only_loss=True, **TRUNCATED)
    plw_0 = train_one_step(tiny_model_dir, rows, tmp_path / "b", plw=0.0, **TRUNCATED)

    assert plw_0.train_dataset["input_ids"] == completion_only.train_dataset["input_ids"]
    assert_same_parameters(parameters(completion_only), parameters(plw_0), initial)


def test_a_schedule_that_weights_the_prompt_later_keeps_them(rows, tiny_model_dir, tmp_path):
    schedule = dict(prompt_loss_weight_policy="linear", prompt_loss_weight_final=0.2)
    trainer = train_one_step(tiny_model_dir, rows, tmp_path / "a", plw=0.0, **schedule, **TRUNCATED)
    assert len(trainer.train_dataset) == len(rows)
    assert max(len(ids) for ids in trainer.train_dataset["input_ids"]) == 29


def test_no_weighted_row_left_says_why(rows, tiny_model_dir, tmp_path):
    prompt_only = [row for row in rows if len(row["prompt"]) > 100][:4]
    long_prompts = [{**row, "prompt": row["prompt"] * 3} for row in prompt_only]
    with pytest.raises(ValueError, match=r"no row of the train dataset holds a token of weight above 0 after truncation "
                                         r"to max_length=29 .*prompt loss weight is 0 throughout training.*4 rows"):
        train_one_step(tiny_model_dir, long_prompts, tmp_path / "a", plw=0.0, **TRUNCATED)
