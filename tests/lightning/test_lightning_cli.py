"""LightningCLI configures the callback from the example's YAML file and from command-line flags, for
lightning.pytorch and pytorch_lightning alike."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
from lightning.pytorch.cli import LightningCLI
from plw_lightning_testlib import TRAINER_DEFAULTS, TinyLM, TinyLMClassic
from pytorch_lightning.cli import LightningCLI as ClassicLightningCLI

from plw_plugins.config import HELP
from plw_plugins.integrations.lightning import PromptLossWeight
from plw_plugins.integrations.lightning.pytorch_lightning import PromptLossWeight as ClassicPromptLossWeight

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lightning"
QUIET = [f"--trainer.{key}={value}" for key, value in TRAINER_DEFAULTS.items()]


@pytest.fixture(autouse=True)
def no_pytest_argv(monkeypatch):
    """LightningCLI warns when it gets ``args`` beside a command line: hide pytest's."""
    monkeypatch.setattr(sys, "argv", ["cli"])


@pytest.mark.slow
def test_example_yaml_config_trains_and_logs_both_losses(tiny_model_dir, tmp_path):
    command = [
        sys.executable, str(EXAMPLE / "cli.py"), "fit", "--config", str(EXAMPLE / "config.yaml"),
        f"--model.model_path={tiny_model_dir}", f"--data.tokenizer_path={tiny_model_dir}",
        "--data.train_rows=16", "--data.val_rows=8", "--data.max_length=96", "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu", "--trainer.log_every_n_steps=1", f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    [metrics_file] = tmp_path.glob("lightning_logs/version_*/metrics.csv")
    with open(metrics_file) as file:
        rows = list(csv.DictReader(file))
    values = {key: [float(row[key]) for row in rows if row[key]] for key in rows[0]}
    for stage in ("train", "val"):
        for name in ("prompt_loss", "completion_loss"):
            [value] = values[f"{stage}/{name}"]
            assert math.isfinite(value) and value > 0, (stage, name, value)
    # 16 rows in batches of 8: two steps, at the YAML's weight.
    assert values["train/prompt_loss_weight"] == [pytest.approx(0.1)] * 2


def test_short_name_and_flags_configure_the_callback(tiny_model_dir):
    cli = LightningCLI(
        TinyLM,
        save_config_callback=None,
        args=[
            "fit", f"--model.model_dir={tiny_model_dir}", "--model.rows=2", "--model.learning_rate=0.01",
            "--trainer.max_steps=2", *QUIET,
            "--trainer.callbacks+=PromptLossWeight", "--trainer.callbacks.prompt_loss_weight=0.3",
            "--trainer.callbacks.prompt_loss_weight_policy=linear", "--trainer.callbacks.prompt_loss_weight_final=0.5",
        ],
    )
    [plw] = [c for c in cli.trainer.callbacks if isinstance(c, PromptLossWeight)]
    assert (plw.config.prompt_loss_weight, plw.config.prompt_loss_weight_final) == (0.3, 0.5)
    assert cli.trainer.global_step == 2
    assert plw.prompt_loss_weight_now == pytest.approx(0.5)
    assert len(cli.model.step_losses) == 2


def test_cli_rejects_a_bad_weight(tiny_model_dir):
    with pytest.raises(ValueError, match="prompt_loss_weight must be a number in \\[0, 1\\], got 1.5"):
        LightningCLI(
            TinyLM,
            save_config_callback=None,
            args=["fit", f"--model.model_dir={tiny_model_dir}", "--trainer.callbacks+=PromptLossWeight",
                  "--trainer.callbacks.prompt_loss_weight=1.5", *QUIET],
        )


def test_pytorch_lightning_cli_with_class_path(tiny_model_dir):
    cli = ClassicLightningCLI(
        TinyLMClassic,
        save_config_callback=None,
        args=[
            "fit", f"--model.model_dir={tiny_model_dir}", "--model.rows=2", "--trainer.max_steps=2", *QUIET,
            "--trainer.callbacks+=plw_plugins.integrations.lightning.pytorch_lightning.PromptLossWeight",
            "--trainer.callbacks.prompt_loss_weight=0.2",
        ],
    )
    assert isinstance(cli.trainer, pl.Trainer)
    [plw] = [c for c in cli.trainer.callbacks if isinstance(c, ClassicPromptLossWeight)]
    assert isinstance(plw, pl.Callback) and plw.prompt_loss_weight_now == 0.2
    assert len(cli.model.step_losses) == 2


def test_cli_help_explains_the_keys(tiny_model_dir, capsys):
    with pytest.raises(SystemExit):
        LightningCLI(TinyLM, args=["fit", "--trainer.callbacks.help", "PromptLossWeight"])
    text = " ".join(capsys.readouterr().out.split())
    for key, help_text in HELP.items():
        assert f"--trainer.callbacks.{key}" in text and help_text in text, key
