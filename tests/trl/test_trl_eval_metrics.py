"""Prompt and completion metrics follow the trainer's evaluation conventions: the prefix the trainer
gives each call (a dict of eval sets, ``metric_key_prefix``, ``predict``), one call's tokens alone,
and ``metric_for_best_model``; against the real ``PLWSFTTrainer`` and transformers' own evaluation loss."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from test_trl_ddp import free_port, run_worker
from trl_harness import training_args

from plw_plugins.cli.builtin_data import instruction_rows
from plw_plugins.integrations.trl import PLWSFTConfig, PLWSFTTrainer

EVAL_BATCH = 16  # every evaluation set fits in one batch: transformers' eval_loss is then a token mean


def trainer_at_plw_0(model_dir, tmp_path, eval_dataset=None, **overrides):
    """An untrained ``PLWSFTTrainer`` at PLW 0, whose ``eval_loss`` is then the completion loss."""
    args = training_args(PLWSFTConfig, tmp_path, prompt_loss_weight=0.0, per_device_eval_batch_size=EVAL_BATCH, **overrides)
    return PLWSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir), args=args,
        train_dataset=Dataset.from_list(instruction_rows(4)), eval_dataset=eval_dataset,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )


@pytest.fixture(scope="module")
def sets():
    """Two eval sets of different rows, so that their losses differ."""
    return {"a": Dataset.from_list(instruction_rows(5, seed=1)), "b": Dataset.from_list(instruction_rows(7, seed=2))}


def test_each_evaluation_reports_its_own_tokens_under_its_prefix(tiny_model_dir, tmp_path, sets):
    trainer = trainer_at_plw_0(tiny_model_dir, tmp_path, eval_dataset=sets)
    prepared = trainer.eval_dataset  # tokenised by TRL: predict() takes no raw rows
    alone_b = trainer.evaluate(prepared["b"])
    predicted = trainer.predict(prepared["a"])
    after_predict = trainer.evaluate(prepared["b"])
    as_test = trainer.evaluate(prepared["b"], metric_key_prefix="test")

    assert alone_b["eval_completion_loss"] == pytest.approx(alone_b["eval_loss"], rel=1e-5)
    assert predicted.metrics["test_completion_loss"] == pytest.approx(predicted.metrics["test_loss"], rel=1e-5)
    assert predicted.metrics["test_prompt_loss"] != pytest.approx(alone_b["eval_prompt_loss"], rel=1e-3)
    assert not any(key.startswith("eval_") for key in predicted.metrics)
    for key in ("prompt_loss", "completion_loss"):
        assert after_predict[f"eval_{key}"] == pytest.approx(alone_b[f"eval_{key}"], rel=1e-6), key  # no leak
        assert as_test[f"test_{key}"] == pytest.approx(alone_b[f"eval_{key}"], rel=1e-6), key
    # (TRL's own eval_entropy / eval_mean_token_accuracy keep their eval_ prefix here, as in stock TRL.)
    assert "eval_prompt_loss" not in as_test and "eval_completion_loss" not in as_test
    logged = trainer.state.log_history[-1]
    assert logged["test_prompt_loss"] == as_test["test_prompt_loss"]


def test_a_dict_of_eval_sets_reports_each_set(tiny_model_dir, tmp_path, sets):
    trainer = trainer_at_plw_0(tiny_model_dir, tmp_path, eval_dataset=sets)
    both = trainer.evaluate()
    singles = {name: trainer.evaluate(data) for name, data in sets.items()}
    for name in sets:
        assert both[f"eval_{name}_completion_loss"] == pytest.approx(both[f"eval_{name}_loss"], rel=1e-5)
        for key in ("prompt_loss", "completion_loss"):
            assert both[f"eval_{name}_{key}"] == pytest.approx(singles[name][f"eval_{key}"], rel=1e-6), (name, key)
    assert both["eval_a_prompt_loss"] != pytest.approx(both["eval_b_prompt_loss"], rel=1e-3)
    assert "eval_prompt_loss" not in both
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert {"eval_a_prompt_loss", "eval_b_prompt_loss", "eval_a_completion_loss", "eval_b_completion_loss"} <= logged


@pytest.mark.parametrize(
    ("eval_dataset", "metric"),
    [("single", "eval_completion_loss"), ("dict", "eval_a_completion_loss")],
)
def test_metric_for_best_model(eval_dataset, metric, tiny_model_dir, tmp_path, sets):
    """Training evaluates every step; the best checkpoint is chosen by the completion loss."""
    trainer = trainer_at_plw_0(
        tiny_model_dir, tmp_path, eval_dataset=sets if eval_dataset == "dict" else sets["a"], max_steps=3,
        learning_rate=1e-2, per_device_train_batch_size=2, eval_strategy="steps", eval_steps=1,
        save_strategy="steps", save_steps=1, load_best_model_at_end=True, metric_for_best_model=metric,
        greater_is_better=False,
    )
    trainer.train()
    values = [entry[metric] for entry in trainer.state.log_history if metric in entry]
    assert len(values) == 3 and len(set(values)) == 3
    assert trainer.state.best_metric == min(values)
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{values.index(min(values)) + 1}")


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2])
def test_two_process_evaluation_equals_one_process(batch, tiny_model_dir, tmp_path):
    """5 rows over 2 ranks: accelerate repeats samples to even out the last batch and drops them from
    ``eval_loss``; the prompt and completion losses must not count them either."""
    worker = Path(__file__).with_name("trl_ddp_eval_worker.py")
    single = run_worker([sys.executable], tiny_model_dir, tmp_path / "single.pt", batch, worker=worker)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port()]
    ddp = run_worker(torchrun, tiny_model_dir, tmp_path / "ddp.pt", batch, worker=worker)
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    # (Not eval_a_loss: transformers' own figure is a mean of batch means, and under DDP transformers
    # 5.16 reports a different one than one process even for stock SFTTrainer.)
    for key in ("eval_a_prompt_loss", "eval_a_completion_loss"):
        assert ddp["metrics"][key] == pytest.approx(single["metrics"][key], rel=1e-6), key
