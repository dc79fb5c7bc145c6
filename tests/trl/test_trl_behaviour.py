"""PLWSFTTrainer's errors at construction, its metrics in training and evaluation, its schedule,
and the model checks of the shared transformers mixin."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig
from trl_harness import conversational, last_train_logs, train_one_step, training_args

from plw_plugins.cli.builtin_data import instruction_rows
from plw_plugins.integrations.transformers import install_plw_forward
from plw_plugins.integrations.trl import PLWSFTConfig, PLWSFTTrainer


def construct(model_dir, rows, tmp_path, args=None, **overrides):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = args or training_args(PLWSFTConfig, tmp_path, **overrides)
    return PLWSFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )


@pytest.mark.parametrize(
    ("rows", "overrides", "message"),
    [
        (instruction_rows(4), {"completion_only_loss": False}, "completion_only_loss=False trains prompt-completion"),
        ([{"text": r["prompt"] + r["completion"]} for r in instruction_rows(4)], {}, "nothing to weight"),
        (conversational(instruction_rows(4)), {"assistant_only_loss": False}, "nothing to weight"),
    ],
    ids=["completion_only_loss_false", "language_modelling", "conversational_without_assistant_only_loss"],
)
def test_every_token_already_trained_raises(rows, overrides, message, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=message):
        construct(tiny_model_dir, rows, tmp_path, **overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loss_type": "dft"}, "loss_type='dft' is not supported"),
        ({"label_smoothing_factor": 0.1}, "label_smoothing_factor=0.1 is not supported"),
    ],
)
def test_unsupported_arguments_raise(overrides, message, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=message):
        construct(tiny_model_dir, instruction_rows(4), tmp_path, **overrides)


def test_plain_sft_config_raises(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="needs a PLWSFTConfig"):
        construct(tiny_model_dir, instruction_rows(4), tmp_path, args=training_args(SFTConfig, tmp_path))


def test_model_without_lm_head_raises(tiny_model_dir):
    body = AutoModelForCausalLM.from_pretrained(tiny_model_dir).model  # a LlamaModel: no head
    with pytest.raises(ValueError, match="has no LM head"):
        install_plw_forward(body)


def test_logit_softcapping_model_raises():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, final_logit_softcapping=30.0,
    )
    with pytest.raises(ValueError, match="final_logit_softcapping=30.0"):
        install_plw_forward(Gemma2ForCausalLM(config))


def test_metrics_in_training_and_evaluation(tiny_model_dir, tmp_path):
    """At PLW = 0: the completion loss, entropy and accuracy are stock TRL's completion-only figures;
    the prompt loss is reported too, and evaluation reports both with the eval_ prefix."""
    rows, eval_rows = instruction_rows(4), instruction_rows(6, seed=1)
    stock = train_one_step(tiny_model_dir, rows, tmp_path / "stock", plw=None, completion_only_loss=True, eval_rows=eval_rows)
    plw = train_one_step(tiny_model_dir, rows, tmp_path / "plw", plw=0.0, eval_rows=eval_rows)
    stock_logs, plw_logs = last_train_logs(stock), last_train_logs(plw)
    assert plw_logs["completion_loss"] == pytest.approx(stock_logs["loss"], rel=1e-5)
    for key in ("loss", "entropy", "mean_token_accuracy", "num_tokens"):
        assert plw_logs[key] == pytest.approx(stock_logs[key], rel=1e-5), key
    assert plw_logs["prompt_loss_weight"] == 0.0
    assert plw_logs["prompt_loss"] > 0 and plw_logs["prompt_loss"] != pytest.approx(plw_logs["completion_loss"])

    stock_eval, plw_eval = stock.evaluate(), plw.evaluate()
    assert plw_eval["eval_completion_loss"] == pytest.approx(stock_eval["eval_loss"], rel=1e-5)
    assert plw_eval["eval_loss"] == pytest.approx(stock_eval["eval_loss"], rel=1e-5)
    assert plw_eval["eval_prompt_loss"] > 0
    assert "prompt_loss" not in plw_eval and "eval_prompt_loss_weight" not in plw_eval


def test_loss_only_evaluation_runs_one_forward_and_predict_still_returns_logits(tiny_model_dir, tmp_path):
    """Loss-only evaluation needs no logits, so no second forward pass; ``predict`` gets them."""
    eval_rows = instruction_rows(6, seed=1)
    trainer = train_one_step(tiny_model_dir, instruction_rows(4), tmp_path, plw=0.1, eval_rows=eval_rows)
    calls = []
    handle = trainer.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        loss_only = trainer.evaluate()
        batches = -(-len(eval_rows) // trainer.args.per_device_eval_batch_size)
        assert len(calls) == batches
        predicted = trainer.predict(trainer.eval_dataset)
    finally:
        handle.remove()
    assert predicted.predictions.shape[0] == len(eval_rows)
    assert predicted.predictions.shape[-1] == trainer.model.config.vocab_size
    assert predicted.metrics["test_loss"] == pytest.approx(loss_only["eval_loss"], rel=1e-6)


def test_prompt_loss_equals_train_everything_minus_completions(tiny_model_dir, tmp_path):
    """The logged means recombine into the stock train-on-everything loss, weighting by token counts."""
    rows = instruction_rows(4)
    everything = last_train_logs(train_one_step(tiny_model_dir, rows, tmp_path / "a", plw=None, completion_only_loss=False))
    trainer = train_one_step(tiny_model_dir, rows, tmp_path / "b", plw=1.0)
    logs = last_train_logs(trainer)
    batch = next(iter(trainer.get_train_dataloader()))
    completion = (batch["labels"][:, 1:] != -100).sum().item()
    total = batch["attention_mask"][:, 1:].sum().item()
    recombined = (logs["completion_loss"] * completion + logs["prompt_loss"] * (total - completion)) / total
    assert recombined == pytest.approx(everything["loss"], rel=1e-5)
    assert logs["loss"] == pytest.approx(everything["loss"], rel=1e-5)


def test_linear_schedule_moves_the_weight(tiny_model_dir, tmp_path):
    trainer = train_one_step(
        tiny_model_dir, instruction_rows(8), tmp_path, plw=0.0, max_steps=4, per_device_train_batch_size=2,
        prompt_loss_weight_policy="linear", prompt_loss_weight_final=0.6,
    )
    weights = [entry["prompt_loss_weight"] for entry in trainer.state.log_history if "loss" in entry]
    assert weights == pytest.approx([0.0, 0.15, 0.3, 0.45])


def test_generation_is_unchanged(tiny_model_dir, tmp_path):
    trainer = construct(tiny_model_dir, instruction_rows(4), tmp_path)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    inputs = torch.tensor([[1, 50, 60, 70]])
    with torch.no_grad():
        assert torch.equal(trainer.model(input_ids=inputs).logits, reference(input_ids=inputs).logits)
