"""``plw-plugins sft`` trains from a YAML config plus flags on local paths and saves the model."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from plw_plugins.cli import main as plw_plugins


def test_sft_from_config_and_flags(tiny_model_dir, toolformer_rows, tmp_path, capsys):
    data = tmp_path / "toolformer.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in toolformer_rows[:8]))  # Alpaca rows
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model_dir), "dataset_name": str(data), "output_dir": str(tmp_path / "out"),
        "prompt_loss_weight": 0.5, "max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 0.01,
        "max_length": 512, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
        "bf16": False, "use_cpu": True, "disable_tqdm": True,
    }))
    assert plw_plugins(["sft", "--config", str(config), "--prompt_loss_weight", "0.2"]) == 0

    printed = capsys.readouterr().out
    assert "'prompt_loss'" in printed and "'completion_loss'" in printed
    assert "'prompt_loss_weight': '0.2'" in printed
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(trained.lm_head.weight, initial.lm_head.weight)


def test_the_example_config_runs_from_any_clone_on_the_packages_own_data(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """``plw-plugins sft --config examples/trl/sft.yaml`` from the repository root, as the README runs it:
    its data is a file of the repository, written from the built-in data (the model path is the one
    the README makes with ``plw-plugins tiny-model``; here the test's tiny model)."""
    from pathlib import Path

    from plw_plugins.cli.builtin_data import alpaca_rows

    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "examples" / "trl" / "sft.yaml").read_text())
    data = root / config["dataset_name"]
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert rows == alpaca_rows(len(rows))
    monkeypatch.chdir(root)
    status = plw_plugins([
        "sft", "--config", "examples/trl/sft.yaml", "--prompt_loss_weight", "0.05", "--max_steps", "2",
        "--logging_steps", "1", "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "out"),
    ])
    assert status == 0
    printed = capsys.readouterr().out
    assert "'prompt_loss'" in printed and "'prompt_loss_weight': '0.05'" in printed
    assert (tmp_path / "out" / "config.json").exists()


@pytest.fixture
def train_file(tmp_path, toolformer_rows):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in toolformer_rows[:4]))
    return data


def sft_error(capsys, *argv: str) -> str:
    """The one line that `plw-plugins sft ARGV` prints for a user error, which exits 2."""
    assert plw_plugins(["sft", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("plw-plugins sft: error: ") and err.count("\n") == 1, err
    return err


def test_sft_user_errors_are_one_line(tiny_model_dir, train_file, tmp_path, capsys):
    common = ["--output_dir", str(tmp_path / "out"), "--use_cpu", "--bf16", "false", "--report_to", "none"]
    model, data = ["--model_name_or_path", str(tiny_model_dir)], ["--dataset_name", str(train_file)]
    err = sft_error(capsys, *model, *data, *common, "--prompt_loss_weight", "1.5")
    assert "prompt_loss_weight must be a number in [0, 1], got 1.5" in err
    err = sft_error(capsys, *model, *data, *common, "--prompt_loss_weight_policy", "sawtooth")
    assert "prompt_loss_weight_policy='sawtooth' is not a registered policy" in err

    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"prompt_loss_weight": 0.1, "prompt_loss_weight_final": 0.5}))
    err = sft_error(capsys, "--config", str(config), *model, *data, *common)
    assert "prompt_loss_weight_final=0.5 has no effect with prompt_loss_weight_policy='constant'" in err
    assert "no such file" in sft_error(capsys, "--config", str(tmp_path / "missing.yaml"))

    err = sft_error(capsys, "--model_name_or_path", str(tmp_path / "no-model"), *data, *common)
    assert f"model_name_or_path={str(tmp_path / 'no-model')!r}: no such folder" in err
    assert "Repo id" not in err
    err = sft_error(capsys, *model, "--dataset_name", str(tmp_path / "missing.jsonl"), *common)
    assert f"dataset_name={str(tmp_path / 'missing.jsonl')!r}: no such file or folder" in err
    assert "dataset_name is required" in sft_error(capsys, *model, *common)


def test_sft_help_opens_with_what_it_is_and_our_keys(capsys):
    from plw_plugins.config import HELP

    with pytest.raises(SystemExit) as exit_info:
        plw_plugins(["sft", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    head = text[: text.index("options:")]
    assert head.startswith("usage: plw-plugins sft [--config FILE] [--KEY VALUE ...]\n\nFine-tune a model with TRL's SFTTrainer")
    positions = [head.index(f"--{key}\n") for key in HELP]
    assert positions == sorted(positions)
    flat = " ".join(head.split())
    assert all(" ".join(description.split()) in flat for description in HELP.values())
    assert "--learning_rate" in text[text.index("options:"):]  # TRL's own options follow
