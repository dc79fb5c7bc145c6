"""`plw-plugins stats` on real and built-in data: every format, skipped rows, errors, --json, --plot,
and token counts checked against TRL's own dataset preparation."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from plw_plugins.cli.builtin_data import alpaca_rows, instruction_messages, instruction_rows
from plw_plugins.cli.datasets import ALPACA_TEMPLATE, ALPACA_TEMPLATE_NO_INPUT
from plw_plugins.cli.stats import main, percentile, token_lengths

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def run_json(capsys, *args) -> dict:
    assert main([*map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def run_error(capsys, *args) -> str:
    assert main(list(map(str, args))) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def independent_counts(tokenizer, prompts: list[str], completions: list[str]) -> tuple[list[int], list[int]]:
    """Row by row, unbatched: the completion starts where the tokens of the prompt and of prompt +
    completion + eos first differ (tokens can merge across the boundary)."""
    prompt_lengths, completion_lengths = [], []
    for prompt, completion in zip(prompts, completions):
        prompt_ids = tokenizer(prompt)["input_ids"]
        full_ids = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
        shared = next((i for i, (a, b) in enumerate(zip(prompt_ids, full_ids)) if a != b), min(len(prompt_ids), len(full_ids)))
        prompt_lengths.append(shared)
        completion_lengths.append(len(full_ids) - shared)
    return prompt_lengths, completion_lengths


def alpaca_prompt(row: dict) -> str:
    if row.get("input"):
        return ALPACA_TEMPLATE.format(instruction=row["instruction"], input=row["input"])
    return ALPACA_TEMPLATE_NO_INPUT.format(instruction=row["instruction"])


@pytest.mark.parametrize("name", ["gpteacher_toolformer_alpaca.json", "gsm8k_train_alpaca.json"])
def test_real_file_matches_an_independent_count(capsys, tmp_path, tiny_model_dir, tokenizer, name):
    """The whole real file is read (every row, no skips, advice with the study's numbers); on its first
    300 rows every --json total, mean, percentile and ratio equals a row-by-row count with numpy."""
    import numpy as np

    records = json.loads((SHARED_DATA / name).read_text())
    assert main([str(SHARED_DATA / name), "--tokenizer", str(tiny_model_dir)]) == 0
    report = capsys.readouterr().out
    assert f"rows: {len(records):,} used, 0 skipped" in report
    assert "SHORT-COMPLETION DATA" in report and "0.01 to 0.5" in report  # under the Alpaca prompt, both are
    assert "Risk of PLW = 0" in report and "Risk of PLW = 1" in report and "arxiv.org/abs/2401.13586" in report

    head = records[:300]
    subset = tmp_path / name
    subset.write_text(json.dumps(head))
    got = run_json(capsys, subset, "--tokenizer", tiny_model_dir)
    p, c = map(np.array, independent_counts(tokenizer, [alpaca_prompt(r) for r in head], [r["output"] for r in head]))
    assert got["rows"] == 300 and got["skipped_rows"] == 0 and got["format"] == "alpaca"
    assert got["prompt_tokens"] == p.sum() and got["completion_tokens"] == c.sum()
    assert got["generation_ratio"] == pytest.approx(c.mean() / p.mean())
    assert got["generation_ratio_mean_of_rows"] == pytest.approx((c / p).mean())
    assert got["prompt_token_share"] == pytest.approx(p.sum() / (p.sum() + c.sum()))
    assert got["short_completion_row_share"] == pytest.approx((c < p).mean())
    for key, lengths in (("prompt_length", p), ("completion_length", c)):
        assert got[key]["mean"] == pytest.approx(lengths.mean())
        assert got[key]["max"] == lengths.max()
        for q in (50, 90, 99):
            assert got[key][f"p{q}"] == pytest.approx(np.percentile(lengths, q))


def test_template_override_changes_the_prompt_and_the_regime(capsys, tmp_path, tiny_model_dir, tokenizer):
    """GSM8K is short-completion under the Alpaca prompt (its preamble is long) and not under a bare one."""
    rows = json.loads((SHARED_DATA / "gsm8k_train_alpaca.json").read_text())[:200]
    path = tmp_path / "gsm8k.json"
    path.write_text(json.dumps(rows))
    template = "Q: {instruction}\nA: "
    bare = run_json(capsys, path, "--tokenizer", tiny_model_dir, "--template", template)
    p, c = independent_counts(tokenizer, [template.format(instruction=r["instruction"]) for r in rows], [r["output"] for r in rows])
    assert (bare["prompt_tokens"], bare["completion_tokens"]) == (sum(p), sum(c))
    assert bare["generation_ratio"] > 1 and not bare["short_completion"]
    assert bare["advice"][0].startswith("LONG-COMPLETION DATA")

    template_file = tmp_path / "template.txt"
    template_file.write_text(template)
    assert run_json(capsys, path, "--tokenizer", tiny_model_dir, "--template", f"@{template_file}") == bare
    alpaca = run_json(capsys, path, "--tokenizer", tiny_model_dir)
    assert alpaca["generation_ratio"] < 1 and alpaca["short_completion"]
    assert alpaca["advice"][0].startswith("SHORT-COMPLETION DATA")


def test_all_formats_and_containers_agree(capsys, tmp_path, tiny_model_dir):
    """The same tasks as Alpaca JSON, prompt-completion JSONL, a saved Dataset and a saved DatasetDict
    give the same statistics; text prompts formatted as the Alpaca template gives identical counts."""
    from datasets import Dataset, DatasetDict

    template = "### Instruction:\n{instruction}\n\n### Response:\n"  # builtin_data's prompt template
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps(alpaca_rows(60)))
    prompt_completion = write_jsonl(tmp_path / "pc.jsonl", instruction_rows(60))
    Dataset.from_list(instruction_rows(60)).save_to_disk(tmp_path / "saved")
    DatasetDict({"train": Dataset.from_list(instruction_rows(60)), "test": Dataset.from_list(instruction_rows(5))}).save_to_disk(
        tmp_path / "saved_dict"
    )
    tokenizer = ("--tokenizer", tiny_model_dir)
    reference = run_json(capsys, alpaca, *tokenizer, "--template", template)
    reference.pop("format")
    for path in (prompt_completion, tmp_path / "saved", tmp_path / "saved_dict"):
        got = run_json(capsys, path, *tokenizer)
        assert got.pop("format") == "prompt-completion"
        assert got == reference
    test_split = run_json(capsys, tmp_path / "saved_dict", *tokenizer, "--split", "test")
    assert test_split["rows"] == 5


def test_messages_count_the_last_assistant_turn_as_completion(capsys, tmp_path, tiny_model_dir, tokenizer):
    rows = instruction_messages(40)
    rows[0]["messages"] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say one."},
        {"role": "assistant", "content": "one"},
        *rows[0]["messages"],
    ]
    got = run_json(capsys, write_jsonl(tmp_path / "chat.jsonl", rows), "--tokenizer", tiny_model_dir)
    assert got["format"] == "messages" and got["rows"] == 40
    prompt_total = completion_total = 0
    for row in rows:
        messages = row["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"]
        assert full[: len(prompt)] == prompt
        completion = full[len(prompt) :]
        assert tokenizer.decode(completion) == messages[-1]["content"] + tokenizer.eos_token
        prompt_total, completion_total = prompt_total + len(prompt), completion_total + len(completion)
    assert (got["prompt_tokens"], got["completion_tokens"]) == (prompt_total, completion_total)


def test_counts_equal_sft_trainer_masks(tmp_path, tiny_model_dir, tokenizer):
    """TRL's own dataset preparation, for text and conversational prompt-completion rows, masks
    exactly the tokens stats calls prompt and trains exactly those it calls completion."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from plw_plugins.cli.datasets import to_prompt_completion

    text = to_prompt_completion(alpaca_rows(12)).rows
    chat = to_prompt_completion(instruction_messages(12)).rows
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for rows in (text, chat):
        config = SFTConfig(output_dir=str(tmp_path / "out"), report_to=[], max_length=None, use_cpu=True)
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        prepared = trainer.train_dataset
        prompt_lengths, completion_lengths = token_lengths(rows, tokenizer)
        assert [sum(label == -100 for label in labels) for labels in prepared["labels"]] == prompt_lengths
        assert [sum(label != -100 for label in labels) for labels in prepared["labels"]] == completion_lengths


def test_skipped_rows_are_counted_by_reason(capsys, tmp_path, tiny_model_dir):
    rows = alpaca_rows(10) + [
        {"instruction": "Say hi.", "input": "", "output": ""},
        {"instruction": "Say hi.", "input": ""},
        {"instruction": "   ", "output": "hi"},
        {"instruction": None, "output": "hi"},
        ["not", "an", "object"],
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n{broken json\n")
    got = run_json(capsys, path, "--tokenizer", tiny_model_dir)
    assert got["rows"] == 10 and got["skipped_rows"] == 6
    assert got["skipped_reasons"] == {
        "missing or empty `output`": 2,
        "missing or empty `instruction`": 2,
        "not a JSON object": 1,
        "not valid JSON": 1,
    }
    assert main([str(path), "--tokenizer", str(tiny_model_dir)]) == 0
    assert "rows: 10 used, 6 skipped (2 missing or empty `output`" in capsys.readouterr().out


def test_bad_input_is_a_clear_error_with_exit_code_2(capsys, tmp_path, tiny_model_dir):
    tokenizer = ("--tokenizer", tiny_model_dir)
    assert "no such file" in run_error(capsys, tmp_path / "missing.json", *tokenizer)

    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{"question": "q", "answer": "a"}]))
    err = run_error(capsys, unknown, *tokenizer)
    assert "unknown data format" in err and "['answer', 'question']" in err and "--format" in err

    broken = tmp_path / "broken.json"
    broken.write_text('[{"instruction": "x", "output": ')
    assert "not valid JSON" in run_error(capsys, broken, *tokenizer)

    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "cannot be read as UTF-8" in run_error(capsys, binary, *tokenizer)

    (tmp_path / "folder").mkdir()
    assert "not a dataset saved with `save_to_disk`" in run_error(capsys, tmp_path / "folder", *tokenizer)

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "empty" in run_error(capsys, empty, *tokenizer)

    all_skipped = write_jsonl(tmp_path / "skipped.jsonl", [{"instruction": "x", "output": ""}])
    assert "no usable rows in the alpaca data (1 missing or empty `output`)" in run_error(capsys, all_skipped, *tokenizer)

    good = write_jsonl(tmp_path / "good.jsonl", alpaca_rows(3))
    assert "must contain {instruction}" in run_error(capsys, good, *tokenizer, "--template", "{input}")
    assert "unknown fields ['question']" in run_error(capsys, good, *tokenizer, "--template", "{instruction}{question}")
    assert "cannot read the template file" in run_error(capsys, good, *tokenizer, "--template", f"@{tmp_path / 'none.txt'}")
    assert "cannot load tokenizer" in run_error(capsys, good, "--tokenizer", tmp_path / "no-tokenizer")
    with pytest.raises(SystemExit) as exit_info:
        main([str(good), *map(str, tokenizer), "--format", "sharegpt"])
    assert exit_info.value.code == 2 and "invalid choice: 'sharegpt'" in capsys.readouterr().err


def test_plot_writes_a_png_of_both_histograms(capsys, tmp_path, tiny_model_dir):
    from matplotlib.image import imread

    data = write_jsonl(tmp_path / "pc.jsonl", instruction_rows(60))
    plot = tmp_path / "lengths.png"
    assert main([str(data), "--tokenizer", str(tiny_model_dir), "--plot", str(plot)]) == 0
    assert f"length histograms written to {plot}" in capsys.readouterr().out
    header = plot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width > 800 and height > 300
    pixels = imread(plot)
    assert pixels.shape[:2] == (height, width) and pixels.std() > 0.05  # not blank


def test_percentile_matches_numpy():
    import numpy as np

    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 100, 1001):
        values = rng.integers(0, 500, size).tolist()
        for q in (0, 50, 90, 99, 100):
            assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_core_modules_import_without_optional_dependencies():
    """The commands import their heavy dependencies only when run: importing stats, datasets, advice
    and demo loads no transformers, datasets, matplotlib or trl."""
    code = (
        "import sys, plw_plugins, plw_plugins.cli.stats, plw_plugins.cli.datasets, plw_plugins.cli.advice, plw_plugins.cli.demo\n"
        "loaded = [m for m in ('transformers', 'datasets', 'matplotlib', 'trl') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
