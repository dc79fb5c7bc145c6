"""On TRL versions that install a fused LM head (1.16 and later), PLWSFTTrainer scores the targets
with it, and the result equals the core's own chunked path."""

from __future__ import annotations

import pytest
from trl.trainer import utils as trl_utils
from trl_harness import assert_same_parameters, initial_parameters, last_train_logs, parameters, train_one_step

from plw_plugins.cli.builtin_data import instruction_rows
from plw_plugins.integrations.trl import PLWSFTTrainer

pytestmark = pytest.mark.skipif(
    not hasattr(trl_utils, "add_fused_lm_head"), reason="this TRL has no fused LM head; the core's path is used"
)


def test_the_fused_head_scores_the_targets_and_agrees_with_the_core_path(tiny_model_dir, tmp_path, monkeypatch):
    assert PLWSFTTrainer.plw_fused_lm_head
    calls = []
    kernel = trl_utils._ChunkedLogProbFunction
    original_apply = kernel.apply
    monkeypatch.setattr(kernel, "apply", lambda *args: calls.append(1) or original_apply(*args))

    rows = instruction_rows(4)
    fused = train_one_step(tiny_model_dir, rows, tmp_path / "fused", plw=0.3)
    assert calls, "TRL's fused LM head was not used"
    calls.clear()
    monkeypatch.setattr(PLWSFTTrainer, "plw_fused_lm_head", False)
    core = train_one_step(tiny_model_dir, rows, tmp_path / "core", plw=0.3)
    assert not calls

    assert_same_parameters(parameters(fused), parameters(core), initial_parameters(tiny_model_dir))
    fused_logs, core_logs = last_train_logs(fused), last_train_logs(core)
    for key in ("loss", "prompt_loss", "completion_loss", "entropy", "mean_token_accuracy"):
        assert fused_logs[key] == pytest.approx(core_logs[key], rel=1e-5), key
