"""`plw-plugins demo` end to end through the real PLWSFTTrainer on the package's pre-trained tiny
model, with few steps: the table and its measurements, the cache, the quiet output, the run without
matplotlib, and the user errors."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap

import pytest

from plw_plugins.cli import demo
from plw_plugins.cli.builtin_data import instruction_messages
from plw_plugins.cli.demo import main, parse_weights
from plw_plugins.cli.pretrained import PretrainSettings

SMALL_PRETRAIN = PretrainSettings(steps=30, batch_size=8, text_rows=256)
"""Pre-training small enough for the tests; the cache key differs from the real presets'."""
QUICK_ARGS = ["--quick", "--max-steps", "6", "--batch-size", "8", "--held-out-rows", "12"]


def table_rows(output: str) -> dict[str, list[float | None]]:
    """The demo's table as ``{weight or 'start': [numbers...]}`` (None for a cell shown as -)."""
    rows = {}
    for line in output.splitlines():
        match = re.fullmatch(r"\| (start|[0-9.e-]+) \| (.+) \|", line)
        if match:
            rows[match.group(1)] = [None if cell == "-" else float(cell) for cell in match.group(2).split(" | ")]
    return rows


def check_png(path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(path).std() > 0.05  # something is drawn


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("plw-cache")


@pytest.fixture
def small_quick_preset(monkeypatch):
    monkeypatch.setattr(demo, "QUICK", demo.Preset(max_steps=6, held_out_rows=12, general_rows=8, pretrain=SMALL_PRETRAIN))


@pytest.mark.slow
def test_quick_demo_measures_the_mechanism(capsys, tmp_path, cache_dir, small_quick_preset):
    """Pre-trains once (cached), fine-tunes at 0, 0.1 and 1 and reports per weight the losses, the
    general-text loss and the weight change; the weight visibly at work (the more the prompt is
    trained, the lower its held-out loss); every run starts from the same model."""
    out = tmp_path / "demo"
    assert main([*QUICK_ARGS, "--cache-dir", str(cache_dir), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pre-training a tiny model" in printed
    assert len(list(cache_dir.glob("tiny-llama-*/config.json"))) == 1

    rows = table_rows(printed)
    assert list(rows) == ["start", "0", "0.1", "1"]
    for numbers in rows.values():
        assert len(numbers) == 6 and all(math.isfinite(n) and n >= 0 for n in numbers)
    assert rows["start"][5] == 0 and all(rows[w][5] > 0 for w in ("0", "0.1", "1"))  # the weights moved
    held_out_prompt = [rows[w][2] for w in ("0", "0.1", "1")]
    assert held_out_prompt[0] > held_out_prompt[1] > held_out_prompt[2]
    check_png(out / "loss_curves.png")

    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    summary = next(line for line in printed.splitlines() if line.startswith("What the numbers show"))
    closest = min(runs, key=lambda run: run["end"]["weight_distance"])
    assert f"the weights moved least at PLW {closest['prompt_loss_weight']:g} ({closest['end']['weight_distance']:.3f})" in summary
    assert [r["prompt_loss_weight"] for r in runs] == [0.0, 0.1, 1.0]
    assert results["settings"]["max_steps"] == 6
    for run in runs:
        assert run["start"] == runs[0]["start"]
        curves = run["curves"]
        for key in ("held_out_prompt_loss", "held_out_completion_loss", "general_text_loss", "weight_distance"):
            assert curves[key][0][0] == 0 and curves[key][-1][0] == 6
        assert run["end"]["weight_distance"] == curves["weight_distance"][-1][1]
        assert any("loss" in entry and "prompt_loss" in entry for entry in run["log_history"])  # the per-step logs

    again = tmp_path / "again"
    assert main([*QUICK_ARGS, "--weights", "0.5", "--max-steps", "1", "--cache-dir", str(cache_dir), "--output-dir", str(again)]) == 0
    assert "(cached)" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_without_matplotlib_still_reports_and_its_output_is_short(tmp_path, cache_dir):
    """matplotlib blocked in a real subprocess: a note before training, then the table, results.json,
    no PNG and how to get the plot; the terminal shows a progress bar per weight, not the logs."""
    script = tmp_path / "no_matplotlib.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.modules["matplotlib"] = None  # import matplotlib now raises ImportError
        from plw_plugins.cli import demo
        from plw_plugins.cli.pretrained import PretrainSettings
        demo.QUICK = demo.Preset(max_steps=6, held_out_rows=12, general_rows=8, pretrain={SMALL_PRETRAIN!r})
        sys.exit(demo.main(sys.argv[1:]))
    """))
    out = tmp_path / "demo"
    argv = [*QUICK_ARGS, "--weights", "0,1", "--cache-dir", str(cache_dir), "--output-dir", str(out)]
    done = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("matplotlib is not installed")
    assert "pip install matplotlib" in done.stdout.splitlines()[-2]
    assert list(table_rows(done.stdout)) == ["start", "0", "1"]
    assert json.loads((out / "results.json").read_text())["runs"][1]["prompt_loss_weight"] == 1.0
    assert not (out / "loss_curves.png").exists()

    assert len(done.stdout.splitlines()) < 20
    assert "'loss'" not in done.stdout + done.stderr and "eval_" not in done.stdout + done.stderr
    assert "PLW 0: 100%" in done.stderr and "PLW 1: 100%" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_verbose_shows_the_trainer_logs(capsys, tmp_path, cache_dir, small_quick_preset):
    argv = [*QUICK_ARGS, "--weights", "0.1", "--max-steps", "2", "--verbose", "--cache-dir", str(cache_dir), "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "'prompt_loss'" in printed.out + printed.err and "'eval_held_out_loss'" in printed.out + printed.err


@pytest.mark.slow
def test_demo_on_a_saved_conversational_dataset(capsys, tmp_path, tiny_model_dir):
    """--model (the start, no pre-training), --dataset (a saved dataset of messages), --weights, --held-out-rows."""
    from datasets import Dataset

    Dataset.from_list(instruction_messages(40)).save_to_disk(tmp_path / "chat")
    out = tmp_path / "demo"
    argv = ["--model", str(tiny_model_dir), "--dataset", str(tmp_path / "chat"), "--weights", "0,0.5",
            "--max-steps", "3", "--batch-size", "4", "--held-out-rows", "8", "--output-dir", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "32 training rows, 8 held out" in printed
    rows = table_rows(printed)
    assert list(rows) == ["start", "0", "0.5"]
    assert "held-out completion, short (" in printed and "held-out completion, long (" in printed
    assert rows["start"][6:] == [None, None]
    assert all(math.isfinite(n) for numbers in rows.values() for n in numbers if n is not None)
    assert all(None not in rows[w] and len(rows[w]) == 8 for w in ("0", "0.5"))
    check_png(out / "loss_curves.png")
    assert not (tmp_path / "cache").exists()  # the user's model is the start: nothing pre-trained


def test_bad_arguments_exit_with_code_2(capsys, tmp_path):
    cases = {
        ("--weights", "0,1.5"): "--weights entry '1.5' must be a number in [0, 1], got 1.5",
        ("--weights", "0,x"): "--weights: 'x' is not a number",
        ("--weights", "0.1,0.1"): "repeats a weight",
        ("--max-steps", "0"): "--max-steps must be at least 1, got 0",
        ("--learning-rate", "-1"): "--learning-rate must be a positive number, got -1.0",
        ("--dataset", str(tmp_path / "missing.json")): "no such file",
        ("--model", str(tmp_path / "no-model")): f"--model={str(tmp_path / 'no-model')!r}: no such folder",
    }
    for argv, message in cases.items():
        assert main([*argv, "--output-dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    one_row = tmp_path / "one.jsonl"
    one_row.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    assert main(["--dataset", str(one_row)]) == 2
    assert "1 usable rows; the demo needs at least 2" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.json").exists()


def test_parse_weights():
    assert parse_weights("0,0.01,0.1,0.5,1") == [0.0, 0.01, 0.1, 0.5, 1.0]
    with pytest.raises(ValueError, match="'-0.1'"):
        parse_weights("-0.1")
