"""End-to-end: real ``axolotl train`` runs with the plugin against stock Axolotl runs.

The alpaca runs use a tokenizer that pads with its eos token and four real Toolformer rows; every
run's first optimiser step covers all four rows, so runs that differ only in how the step is laid
out (micro-batches, packing) must log the same loss and the same gradient norm.
"""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.axolotl, pytest.mark.slow]

LOSS_TOLERANCE = 1e-5


def assert_same_step(run, reference) -> None:
    """Same first-step loss and gradient norm: the same loss function, with gradients."""
    step, expected = run.step(1), reference.step(1)
    assert step["loss"] == pytest.approx(expected["loss"], rel=LOSS_TOLERANCE)
    assert step["grad_norm"] == pytest.approx(expected["grad_norm"], rel=LOSS_TOLERANCE)


def test_runs_and_logs_both_losses(axolotl_runs):
    for name in ("plw_0", "plw_0.3", "plw_1"):
        step = axolotl_runs.get(name).step(1)
        for key in ("loss", "prompt_loss", "completion_loss"):
            assert math.isfinite(step[key]) and step[key] > 0, (name, key, step)
        assert step["prompt_loss_weight"] == float(name.split("_")[1])


def test_weight_0_is_stock_axolotl_completion_only(axolotl_runs):
    assert_same_step(axolotl_runs.get("plw_0"), axolotl_runs.get("stock_masked"))
    step = axolotl_runs.get("plw_0").step(1)
    assert step["loss"] == pytest.approx(step["completion_loss"], rel=LOSS_TOLERANCE)


def test_weight_1_is_stock_axolotl_train_on_inputs(axolotl_runs):
    assert_same_step(axolotl_runs.get("plw_1"), axolotl_runs.get("stock_all_tokens"))


def test_fractional_weight_lies_between(axolotl_runs):
    losses = [axolotl_runs.get(name).step(1)["loss"] for name in ("plw_0", "plw_0.3", "plw_1")]
    grad_norms = {axolotl_runs.get(name).step(1)["grad_norm"] for name in ("plw_0", "plw_0.3", "plw_1")}
    assert min(losses[0], losses[2]) < losses[1] < max(losses[0], losses[2])
    assert len(grad_norms) == 3


def test_gradient_accumulation_does_not_change_the_step(axolotl_runs):
    """Two micro-batches of two rows normalised by the step's W equal one micro-batch of four."""
    assert_same_step(axolotl_runs.get("plw_0.3_accumulated"), axolotl_runs.get("plw_0.3"))


def test_weight_0_under_accumulation_is_the_step_not_stock_axolotls_mean_of_means(axolotl_runs):
    """By design, and as the README says: under gradient accumulation stock Axolotl averages the
    micro-batches' mean losses, while the plugin divides the step's sum by the step's W, so PLW 0
    over two micro-batches is stock Axolotl's single-batch step, not its accumulated one."""
    accumulated, single = axolotl_runs.get("plw_0_accumulated"), axolotl_runs.get("stock_masked")
    assert_same_step(accumulated, single)
    stock = axolotl_runs.get("stock_masked_accumulated").step(1)
    assert stock["grad_norm"] != pytest.approx(single.step(1)["grad_norm"], rel=1e-4)
    assert stock["loss"] != pytest.approx(single.step(1)["loss"], rel=1e-5)


def test_packing_with_pad_equal_to_eos_trains_no_padding(axolotl_runs):
    """One packed row of all four samples padded with eos to the sequence length, without
    attention mask: the same step as the padded batch only if padding and each sample's first
    token (as a target of the previous sample) get weight 0."""
    packed, padded = axolotl_runs.get("plw_1_packed"), axolotl_runs.get("plw_1")
    real_tokens = axolotl_runs.get("stock_all_tokens").step(1)["tokens/trainable"]
    assert packed.step(1)["tokens/total"] > real_tokens  # the packed row did hold padding
    assert_same_step(packed, padded)


def test_a_fused_loss_plugin_is_named_once_at_start_up_and_changes_nothing(axolotl_runs):
    """Liger's fused linear cross-entropy beside the plugin: a warning naming it, once, and the
    plugin's own loss and gradients (the same step as without Liger)."""
    run = axolotl_runs.get("plw_0.3_liger_fused_loss")
    assert run.output.count("liger_fused_linear_cross_entropy: Liger's fused linear cross-entropy does not apply") == 1
    assert_same_step(run, axolotl_runs.get("plw_0.3"))


def test_chat_template_packed_with_evaluation(axolotl_runs):
    run = axolotl_runs.get("chat_packed_eval")
    for number in (1, 2):
        step = run.step(number)
        assert step["prompt_loss_weight"] == 0.1
        assert math.isfinite(step["prompt_loss"]) and math.isfinite(step["completion_loss"])
    evaluations = run.eval_logs()
    assert evaluations, "no evaluation was logged"
    for logs in evaluations:
        for key in ("eval_loss", "eval_prompt_loss", "eval_completion_loss"):
            assert math.isfinite(logs[key]) and logs[key] > 0, (key, logs)
        assert "prompt_loss" not in logs and "completion_loss" not in logs


def test_invalid_weight_stops_the_run(axolotl_runs):
    run = axolotl_runs.get("invalid_weight")
    assert run.returncode != 0
    assert "prompt_loss_weight must be a number in [0, 1], got 1.5" in run.output
    assert not run.log_history
