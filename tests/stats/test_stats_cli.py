"""`plw-plugins stats` on real and built-in data: every format, skipped rows, errors, --json, --plot,
and token counts checked against TRL's own dataset preparation."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from plw_plugins.cli.builtin_data import alpaca_rows, instruction_messages, instruction_rows
from plw_plugins.cli.datasets import ALPACA_TEMPLATE, ALPACA_TEMPLATE_NO_INPUT
from plw_plugins.cli.stats import main, percentile, trained_tokens

from .helpers import SHARED_DATA, pretokens, run_error, run_json, write_jsonl

@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


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


def content_counts(tokenizer, rows: list[dict]) -> tuple[list[int], list[int]]:
    """The study's count, row by row: each Alpaca field tokenised alone, no special tokens."""
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    return [count(r["instruction"]) + count(r.get("input", "")) for r in rows], [count(r["output"]) for r in rows]


def word_ratio(rows: list[dict]) -> float:
    words = lambda text: len(text.split())  # noqa: E731
    return sum(words(r["output"]) for r in rows) / sum(words(r["instruction"]) + words(r.get("input", "")) for r in rows)


# (instruction, input, output): content prompt tokens 5, 2, 4 and completion tokens 1, 6, 1
HAND_MADE = [
    ("alpha beta gamma", "delta epsilon", "zeta"),
    ("eta theta", "", "iota kappa lambda mu alpha beta"),
    ("gamma delta epsilon zeta", "", "eta"),
]


def test_hand_made_data_gives_the_exact_ratio_in_every_format(capsys, tmp_path, word_tokenizer_dir):
    """R_g is the ratio of the content means, 8 / 11, whatever the format or template; the mean of per-row
    ratios is (1/5 + 6/2 + 1/4) / 3 and lands on the other side of 1. The trained counts add exactly the
    Stanford Alpaca prompt's tokens and one eos per completion."""
    alpaca = [{"instruction": i, "input": x, "output": o} for i, x, o in HAND_MADE]
    text = [{"prompt": f"{i} {x}".strip() + "\n", "completion": o} for i, x, o in HAND_MADE]
    chat = [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]} for r in text]
    tokenizer = ("--tokenizer", word_tokenizer_dir)
    results = {
        name: run_json(capsys, write_jsonl(tmp_path / f"{name}.jsonl", rows), *tokenizer)
        for name, rows in (("alpaca", alpaca), ("text", text), ("chat", chat))
    }
    for got in results.values():
        assert (got["rows"], got["prompt_tokens"], got["completion_tokens"]) == (3, 11, 8)
        assert got["generation_ratio"] == round(8 / 11, 3) and got["short_completion"]
        assert got["generation_ratio_mean_of_rows"] == round((1 / 5 + 6 / 2 + 1 / 4) / 3, 3)
        assert got["short_completion_row_share"] == round(2 / 3, 3)
        assert got["completion_length"]["max"] == 6 and got["prompt_length"]["p50"] == 4.0

    template = sum(pretokens(alpaca_prompt(r)) - pretokens(r["instruction"]) - pretokens(r["input"]) for r in alpaca)
    got = results["alpaca"]
    assert got["template_tokens"] == template and got["trained_prompt_tokens"] == 11 + template
    assert got["trained_completion_tokens"] == 8 + 3  # the eos
    assert got["trained_generation_ratio"] == round(11 / (11 + template), 3)
    assert got["template_prompt_share"] == round(template / (11 + template), 3)
    on_template, on_content = (0.1 * n / (0.1 * (11 + template) + 11) for n in (template, 11))
    assert f"At PLW 0.1, {100 * on_template:.1f}% of the loss's weight falls on template tokens and {100 * on_content:.1f}%" in (
        next(p for p in got["advice"] if p.startswith("TEMPLATE:"))
    )
    assert results["text"]["template_tokens"] == 0 and results["text"]["trained_prompt_tokens"] == 11
    # chat: <s> <|user|> before the prompt, <|assistant|> after it; the eos is trained with the completion
    assert results["chat"]["template_tokens"] == 9 and results["chat"]["trained_completion_tokens"] == 11
    # the eos the trainer trains at the end of an assistant turn belongs to that turn, as the core's roles have it
    assert results["chat"]["role_tokens"] == {"system": 0, "user": 11, "tool": 0, "history": 0, "completion": 11, "template": 9}
    assert results["alpaca"]["role_tokens"] is None


def test_conversation_role_totals_add_up_to_the_trained_tokens(capsys, tmp_path, word_tokenizer_dir, tiny_model_dir, tokenizer):
    """Each role's content, earlier assistant turns apart from the final one, and the template's own
    tokens; their sum is the conversation's length as the chat template tokenises it. With the word
    tokenizer every count is known; with the byte-level one the totals still add up exactly."""
    messages = [
        {"role": "system", "content": "alpha beta"},
        {"role": "user", "content": "gamma delta epsilon"},
        {"role": "assistant", "content": "zeta"},
        {"role": "tool", "content": "eta theta iota"},
        {"role": "user", "content": "kappa"},
        {"role": "assistant", "content": "lambda mu"},
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}])
    got = run_json(capsys, path, "--tokenizer", word_tokenizer_dir)
    # <s> and six role headers; each assistant turn's </s> is trained with it, so it belongs to that turn
    assert got["role_tokens"] == {"system": 2, "user": 4, "tool": 3, "history": 2, "completion": 3, "template": 7}
    assert (got["prompt_tokens"], got["completion_tokens"], got["generation_ratio"]) == (10, 2, 0.2)
    assert got["template_tokens"] == 8 and got["trained_prompt_tokens"] == 18 and got["trained_completion_tokens"] == 3
    assert got["template_prompt_share"] == round(8 / 18, 3)

    rows = instruction_messages(30)
    rows[0]["messages"] = messages + rows[0]["messages"]
    got = run_json(capsys, write_jsonl(tmp_path / "chat30.jsonl", rows), "--tokenizer", tiny_model_dir)
    lengths = [len(tokenizer.apply_chat_template(r["messages"], return_dict=True)["input_ids"]) for r in rows]
    assert sum(got["role_tokens"].values()) == sum(lengths) == got["trained_prompt_tokens"] + got["trained_completion_tokens"]
    assert got["role_tokens"]["system"] > 0 and got["role_tokens"]["tool"] > 0 and got["role_tokens"]["history"] > 0
    assert got["unlocated_messages"] == 0
    assert main([str(tmp_path / "chat30.jsonl"), "--tokenizer", str(tiny_model_dir)]) == 0
    report = capsys.readouterr().out
    assert "conversation tokens by role" in report and "earlier assistant turns" in report
    assert re.search(rf"all, as trained +{sum(lengths):,} ", report)


@pytest.mark.parametrize(("name", "words", "regime"), [
    ("gpteacher_toolformer_alpaca.json", 0.27, "SHORT-COMPLETION DATA"),
    ("gsm8k_train_alpaca.json", 1.10, "LONG-COMPLETION DATA"),
])
def test_real_file_ratio_is_the_studys(capsys, tmp_path, tiny_model_dir, tokenizer, name, words, regime):
    """The whole real file: no skips, R_g within 15% of the whitespace-word ratio (the template does not
    count), the regime and advice from it; on the first 300 rows every --json count, mean, percentile
    and ratio equals a row-by-row count, content and trained."""
    import numpy as np

    records = json.loads((SHARED_DATA / name).read_text())
    assert word_ratio(records) == pytest.approx(words, abs=0.005)
    whole = run_json(capsys, SHARED_DATA / name, "--tokenizer", tiny_model_dir)
    assert (whole["rows"], whole["skipped_rows"]) == (len(records), 0)
    assert whole["generation_ratio"] == pytest.approx(words, rel=0.15)
    assert whole["trained_generation_ratio"] < 0.8 * whole["generation_ratio"]  # the Alpaca prompt's template
    assert whole["advice"][0].startswith(regime) and "AlpacaDataShort 0.08" in whole["advice"][0]
    assert any(p.startswith("TEMPLATE:") for p in whole["advice"]) and "arxiv.org/abs/2401.13586" in whole["citation"]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Know your data") : readme.index("## See the effect")]
    figures = (whole["generation_ratio"], whole["trained_generation_ratio"])
    assert all(f"{figure:.2f}" in section for figure in figures) and f"{100 * whole['template_prompt_share']:.0f}%" in section

    head = records[:300]
    subset = tmp_path / name
    subset.write_text(json.dumps(head))
    got = run_json(capsys, subset, "--tokenizer", tiny_model_dir)
    p, c = map(np.array, content_counts(tokenizer, head))
    tp, tc = map(np.array, independent_counts(tokenizer, [alpaca_prompt(r) for r in head], [r["output"] for r in head]))
    assert got["rows"] == 300 and got["skipped_rows"] == 0 and got["format"] == "alpaca"
    assert (got["prompt_tokens"], got["completion_tokens"]) == (p.sum(), c.sum())
    assert (got["trained_prompt_tokens"], got["trained_completion_tokens"]) == (tp.sum(), tc.sum())
    assert got["generation_ratio"] == round(c.sum() / p.sum(), 3)
    assert got["generation_ratio_mean_of_rows"] == round((c / p).mean(), 3)
    assert got["short_completion_row_share"] == round((c < p).mean(), 3)
    assert got["trained_generation_ratio"] == round(tc.sum() / tp.sum(), 3)
    assert got["trained_prompt_token_share"] == round(tp.sum() / (tp.sum() + tc.sum()), 3)
    # every Alpaca field follows a newline of the template, so it tokenises alone as in the prompt
    assert got["template_tokens"] == tp.sum() - p.sum()
    assert got["template_tokens_per_row"] == round((tp.sum() - p.sum()) / 300, 1)
    for key, lengths in (("prompt_length", p), ("completion_length", c), ("trained_prompt_length", tp), ("trained_completion_length", tc)):
        assert got[key]["mean"] == round(lengths.mean(), 1)
        assert got[key]["max"] == lengths.max()
        for q in (50, 90, 99):
            assert got[key][f"p{q}"] == round(np.percentile(lengths, q), 1)


def test_the_template_changes_what_is_trained_not_the_ratio(capsys, tmp_path, tiny_model_dir, tokenizer):
    """The Stanford Alpaca prompt, a bare one from a file, and one with the fields in reverse order: the
    same content counts and R_g, different trained counts, each equal to an independent count."""
    rows = json.loads((SHARED_DATA / "gsm8k_train_alpaca.json").read_text())[:200]
    path = tmp_path / "gsm8k.json"
    path.write_text(json.dumps(rows))
    template_file = tmp_path / "template.txt"
    template_file.write_text("Q: {instruction}\nA: ")
    alpaca = run_json(capsys, path, "--tokenizer", tiny_model_dir)
    bare = run_json(capsys, path, "--tokenizer", tiny_model_dir, "--template", f"@{template_file}")
    reverse = run_json(capsys, path, "--tokenizer", tiny_model_dir, "--template", "{input}\n---\n{instruction}\n---\n")
    content = ("prompt_tokens", "completion_tokens", "generation_ratio", "generation_ratio_mean_of_rows", "advice")
    for key in content[:-1]:
        assert alpaca[key] == bare[key] == reverse[key]
    assert alpaca["advice"][0] == bare["advice"][0]  # the regime paragraph
    p, c = independent_counts(tokenizer, [f"Q: {r['instruction']}\nA: " for r in rows], [r["output"] for r in rows])
    assert (bare["trained_prompt_tokens"], bare["trained_completion_tokens"]) == (sum(p), sum(c))
    assert bare["trained_generation_ratio"] == round(sum(c) / sum(p), 3)
    assert alpaca["trained_generation_ratio"] < bare["trained_generation_ratio"] < bare["generation_ratio"]
    assert alpaca["template_prompt_share"] > 0.2 > bare["template_prompt_share"] > 0
    assert any(p.startswith("TEMPLATE:") for p in alpaca["advice"]) and not any(p.startswith("TEMPLATE:") for p in bare["advice"])


def test_all_formats_and_containers_agree(capsys, tmp_path, tiny_model_dir):
    """The same tasks as Alpaca JSON, prompt-completion JSONL, a saved Dataset and a saved DatasetDict:
    what is trained is the same; the prompt-completion prompt as written (its "### Instruction:" header
    included) is the content, where Alpaca's is the instruction alone."""
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
    from_alpaca = run_json(capsys, alpaca, *tokenizer, "--template", template)
    reference = run_json(capsys, prompt_completion, *tokenizer)
    for path in (tmp_path / "saved", tmp_path / "saved_dict"):
        assert run_json(capsys, path, *tokenizer) == reference
    trained = [k for k in reference if k.startswith("trained_")] + ["completion_tokens", "completion_length"]
    assert {k: from_alpaca[k] for k in trained} == {k: reference[k] for k in trained}
    assert from_alpaca["prompt_tokens"] + from_alpaca["template_tokens"] == reference["prompt_tokens"]
    assert reference["template_tokens"] == 0 and from_alpaca["generation_ratio"] > reference["generation_ratio"]
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
    prompt_total = completion_total = content_prompt = content_completion = 0
    for row in rows:
        messages = row["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"]
        assert full[: len(prompt)] == prompt
        completion = full[len(prompt) :]
        assert tokenizer.decode(completion) == messages[-1]["content"] + tokenizer.eos_token
        prompt_total, completion_total = prompt_total + len(prompt), completion_total + len(completion)
        content_prompt += sum(len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) for m in messages[:-1])
        content_completion += len(tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"])
    assert (got["trained_prompt_tokens"], got["trained_completion_tokens"]) == (prompt_total, completion_total)
    assert (got["prompt_tokens"], got["completion_tokens"]) == (content_prompt, content_completion)
    assert got["generation_ratio"] == round(content_completion / content_prompt, 3)


def test_trained_counts_equal_sft_trainer_labels(tmp_path, tiny_model_dir, tokenizer):
    """TRL's own dataset preparation, for Alpaca text and conversational rows, masks exactly the tokens
    stats calls trained prompt and trains exactly those it calls trained completion; a conversation's
    role totals are its length as the trainer tokenises it."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from plw_plugins.cli.datasets import to_prompt_completion

    text = to_prompt_completion(json.loads((SHARED_DATA / "gsm8k_train_alpaca.json").read_text())[:12]).rows
    chat = to_prompt_completion(instruction_messages(12)).rows
    chat[0] = {"prompt": [{"role": "system", "content": "Be brief."}, *chat[0]["prompt"]], "completion": chat[0]["completion"]}
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for rows in (text, chat):
        config = SFTConfig(output_dir=str(tmp_path / "out"), report_to=[], max_length=None, use_cpu=True)
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        labels = trainer.train_dataset["labels"]
        counted = trained_tokens(rows, tokenizer)
        assert [sum(label == -100 for label in row) for row in labels] == counted.prompt_lengths
        assert [sum(label != -100 for label in row) for row in labels] == counted.completion_lengths
        assert all(0 < t < p for t, p in zip(counted.template_prompt_lengths, counted.prompt_lengths))
    assert sum(counted.role_tokens.values()) == sum(len(ids) for ids in trainer.train_dataset["input_ids"])


def test_demo_splits_held_out_rows_by_content(tokenizer):
    """The demo's short / long classes follow the study's per-row R_g: a GSM8K row whose answer is longer
    than its question is long, though the Alpaca prompt makes its trained prompt the longer one."""
    from plw_plugins.cli.datasets import to_prompt_completion
    from plw_plugins.cli.demo import split_by_length_class

    records = json.loads((SHARED_DATA / "gsm8k_train_alpaca.json").read_text())[:60]
    rows = to_prompt_completion(records).rows
    p, c = content_counts(tokenizer, records)
    tp, tc = independent_counts(tokenizer, [r["prompt"] for r in rows], [r["completion"] for r in rows])
    classes = split_by_length_class(rows, tokenizer)
    assert classes["short"] == [row for row, a, b in zip(rows, p, c) if b < a]
    assert classes["long"] == [row for row, a, b in zip(rows, p, c) if b >= a]
    assert any(b >= a and tb < ta for a, b, ta, tb in zip(p, c, tp, tc))  # the template would have moved some
    chat = instruction_messages(12)
    classes = split_by_length_class(to_prompt_completion(chat).rows, tokenizer)
    assert sum(map(len, classes.values())) == 12 and set(classes) == {"short", "long"}


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
        "not valid JSON (line 16)": 1,
    }
    assert main([str(path), "--tokenizer", str(tiny_model_dir)]) == 0
    assert "rows: 10 used, 6 skipped (2 missing or empty `output`" in capsys.readouterr().out


def test_broken_json_lines_are_named_by_number(capsys, tmp_path, tiny_model_dir):
    """The first five broken lines by number, the rest counted; blank lines keep the numbering."""
    good = [json.dumps(row) for row in alpaca_rows(4)]
    lines = [good[0], "{", "", good[1], "oops", "[1,", good[2], "}", "nope", "x", good[3], "{'single': 'quotes'}"]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    got = run_json(capsys, path, "--tokenizer", tiny_model_dir)
    assert got["rows"] == 4
    assert got["skipped_reasons"] == {"not valid JSON (lines 2, 5, 6, 8, 9 and 2 more)": 7}
    assert main([str(path), "--tokenizer", str(tiny_model_dir)]) == 0
    assert "7 skipped (7 not valid JSON (lines 2, 5, 6, 8, 9 and 2 more))" in capsys.readouterr().out


def test_json_numbers_are_rounded_as_the_report_prints_them(capsys, tmp_path, tiny_model_dir):
    """Ratios and shares to 3 decimals (0.216, 82.2%), lengths per row to 1; the text shows the same."""
    data = write_jsonl(tmp_path / "pc.jsonl", alpaca_rows(37))
    got = run_json(capsys, data, "--tokenizer", tiny_model_dir)

    def floats(value, key=""):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from floats(v, k)
        elif isinstance(value, float):
            yield key, value

    found = dict(floats({k: v for k, v in got.items() if k != "advice"}))
    assert {"generation_ratio", "trained_generation_ratio", "template_prompt_share", "mean", "p99"} <= set(found)
    for key, value in floats(got):
        digits = 1 if key in ("mean", "p50", "p90", "p99", "template_tokens_per_row") else 3
        assert value == round(value, digits) and len(repr(value).split(".")[1]) <= digits, (key, value)
    assert main([str(data), "--tokenizer", str(tiny_model_dir)]) == 0
    report = capsys.readouterr().out
    assert f"{got['generation_ratio']:.3f}" in report and f"{100 * got['template_prompt_share']:.1f}%" in report
    assert f"{got['trained_prompt_length']['mean']:,.1f}" in report


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
    assert "the file has no rows" in run_error(capsys, empty, *tokenizer)
    empty_list = tmp_path / "empty.json"
    empty_list.write_text("[]\n")
    err = run_error(capsys, empty_list, *tokenizer)
    assert f"{empty_list}: the file has no rows (an empty JSON list)" in err and "unknown data format" not in err

    all_skipped = write_jsonl(tmp_path / "skipped.jsonl", [{"instruction": "x", "output": ""}])
    assert "no usable rows in the alpaca data (1 missing or empty `output`)" in run_error(capsys, all_skipped, *tokenizer)

    good = write_jsonl(tmp_path / "good.jsonl", alpaca_rows(3))
    good_json = tmp_path / "good.json"
    good_json.write_text(json.dumps(alpaca_rows(3)))
    for path in (good, good_json):
        err = run_error(capsys, path, *tokenizer, "--split", "test")
        assert f"{path}: --split 'test' given, but a JSON or JSON Lines file has no splits" in err
    assert "must contain {instruction}" in run_error(capsys, good, *tokenizer, "--template", "{input}")
    assert "unknown fields ['question']" in run_error(capsys, good, *tokenizer, "--template", "{instruction}{question}")
    assert "cannot read the template file" in run_error(capsys, good, *tokenizer, "--template", f"@{tmp_path / 'none.txt'}")
    assert "cannot load tokenizer" in run_error(capsys, good, "--tokenizer", tmp_path / "no-tokenizer")
    with pytest.raises(SystemExit) as exit_info:
        main([str(good), *map(str, tokenizer), "--format", "sharegpt"])
    assert exit_info.value.code == 2 and "invalid choice: 'sharegpt'" in capsys.readouterr().err


def test_plot_writes_a_png_of_both_histograms(capsys, tmp_path, tiny_model_dir):
    """Into a folder that does not exist yet: it is made."""
    from matplotlib.image import imread

    data = write_jsonl(tmp_path / "pc.jsonl", instruction_rows(60))
    plot = tmp_path / "new" / "folder" / "lengths.png"
    assert main([str(data), "--tokenizer", str(tiny_model_dir), "--plot", str(plot)]) == 0
    assert f"length histograms written to {plot}" in capsys.readouterr().out
    header = plot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width > 800 and height > 300
    pixels = imread(plot)
    assert pixels.shape[:2] == (height, width) and pixels.std() > 0.05  # not blank


def test_plot_without_matplotlib_still_reports(tmp_path, tiny_model_dir):
    """Without matplotlib (hidden from the import system in a fresh interpreter) the report is printed,
    no plot is written, one line on stderr says what is missing, and the exit code is 0."""
    data = write_jsonl(tmp_path / "pc.jsonl", instruction_rows(20))
    plot = tmp_path / "lengths.png"
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from plw_plugins.cli.stats import main\n"
        f"sys.exit(main([{str(data)!r}, '--tokenizer', {str(tiny_model_dir)!r}, '--plot', {str(plot)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "generation ratio R_g" in done.stdout and "length histograms written" not in done.stdout
    assert "no plot written: --plot needs matplotlib" in done.stderr and "pip install matplotlib" in done.stderr
    assert "Traceback" not in done.stderr and not plot.exists()


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
