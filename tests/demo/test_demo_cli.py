"""`plw-plugins demo` end to end through the real PLWSFTTrainer on the tiny model, with few steps."""

from __future__ import annotations

import json
import math
import re

import pytest

from plw_plugins.cli.builtin_data import instruction_messages
from plw_plugins.cli.demo import main, parse_weights


def table_rows(output: str) -> dict[str, list[float]]:
    """The demo's table as ``{weight: [numbers...]}``."""
    rows = {}
    for line in output.splitlines():
        match = re.fullmatch(r"\| ([0-9.e-]+) \| (.+) \|", line)
        if match:
            rows[match.group(1)] = [float(cell) for cell in match.group(2).split(" | ")]
    return rows


def check_png(path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(path).std() > 0.05  # something is drawn


@pytest.mark.slow
def test_default_demo_compares_the_weights(capsys, tmp_path):
    """The no-argument path (tiny model built on the spot, built-in data, weights 0, 0.1, 1) with fewer
    steps: one table row per weight with finite losses, the curves PNG, and the weight visibly at work:
    the more the prompt is trained, the lower its loss; every run starts from the same model."""
    out = tmp_path / "demo"
    assert main(["--max-steps", "8", "--batch-size", "8", "--held-out-rows", "24", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = table_rows(printed)
    assert list(rows) == ["0", "0.1", "1"]
    assert "held-out completion, short (" in printed and "held-out completion, long (" in printed
    for numbers in rows.values():
        assert len(numbers) == 6 and all(math.isfinite(n) and n > 0 for n in numbers)
    train_prompt = [numbers[0] for numbers in rows.values()]
    assert train_prompt[0] > train_prompt[1] > train_prompt[2]
    check_png(out / "loss_curves.png")
    assert (out / "tiny-model" / "config.json").exists()

    results = json.loads((out / "results.json").read_text())
    assert [r["prompt_loss_weight"] for r in results] == [0.0, 0.1, 1.0]
    starts = [r["curves"]["held_out_completion_loss"][0] for r in results]
    assert all(step == 0 for step, _ in starts)
    assert starts[1][1] == pytest.approx(starts[0][1]) and starts[2][1] == pytest.approx(starts[0][1])
    for r in results:
        assert r["curves"]["held_out_completion_loss"][-1][0] == 8
        assert r["held_out_completion_loss"] == r["curves"]["held_out_completion_loss"][-1][1]
        assert set(r["held_out_completion_loss_by_class"]) == {"short", "long"}


@pytest.mark.slow
def test_demo_on_a_saved_conversational_dataset(capsys, tmp_path, tiny_model_dir):
    """--model, --dataset (a saved Hugging Face dataset of messages), --weights, --held-out-rows."""
    from datasets import Dataset

    Dataset.from_list(instruction_messages(40)).save_to_disk(tmp_path / "chat")
    out = tmp_path / "demo"
    argv = ["--model", str(tiny_model_dir), "--dataset", str(tmp_path / "chat"), "--weights", "0,0.5",
            "--max-steps", "3", "--batch-size", "4", "--held-out-rows", "8", "--output-dir", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "32 training rows, 8 held out" in printed
    rows = table_rows(printed)
    assert list(rows) == ["0", "0.5"]
    assert all(math.isfinite(n) for numbers in rows.values() for n in numbers)
    check_png(out / "loss_curves.png")
    assert not (out / "tiny-model").exists()


def test_bad_arguments_exit_with_code_2(capsys, tmp_path):
    cases = {
        ("--weights", "0,1.5"): "--weights entry '1.5' must be a number in [0, 1], got 1.5",
        ("--weights", "0,x"): "--weights: 'x' is not a number",
        ("--weights", "0.1,0.1"): "repeats a weight",
        ("--max-steps", "0"): "--max-steps must be at least 1, got 0",
        ("--dataset", str(tmp_path / "missing.json")): "no such file",
        ("--model", str(tmp_path / "no-model")): "cannot load tokenizer",
    }
    for argv, message in cases.items():
        assert main([*argv, "--output-dir", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
    one_row = tmp_path / "one.jsonl"
    one_row.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    assert main(["--dataset", str(one_row)]) == 2
    assert "1 usable rows; the demo needs at least 2" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.json").exists()


def test_parse_weights():
    assert parse_weights("0,0.01,0.1,0.5,1") == [0.0, 0.01, 0.1, 0.5, 1.0]
    with pytest.raises(ValueError, match="'-0.1'"):
        parse_weights("-0.1")
