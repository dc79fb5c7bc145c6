"""The demo's parts on their own: the built-in general text, the pre-training and its cache, and
the report's sentences, which must follow the numbers."""

from __future__ import annotations

import torch

from plw_plugins.cli.builtin_data import general_text, instruction_rows, short_instruction_rows
from plw_plugins.cli.demo_report import prompt_loss_rise_note, what_the_numbers_show
from plw_plugins.cli.demo_training import Measurements, WeightResult
from plw_plugins.cli.pretrained import (
    PretrainSettings,
    cache_root,
    general_text_split,
    pad_batch,
    pretrained_model,
)


def test_general_text_is_deterministic_plain_text():
    assert general_text(16, seed=3) == general_text(16, seed=3) != general_text(16, seed=4)
    assert all(4 <= text.count(". ") + text.count("? ") + 1 for text in general_text(16))
    assert not any("###" in text for text in general_text(64))
    train, held_out = general_text_split(64, 16, seed=0)
    assert len(held_out) == 16 and not set(train) & set(held_out)


def test_short_instruction_rows_have_short_completions():
    rows = short_instruction_rows(30, seed=1)
    assert {row["task"] for row in rows} == {"sum", "parity", "sentiment"}
    assert all(len(row["completion"]) < len(row["prompt"]) / 5 for row in rows)
    assert instruction_rows(2)[0]["task"] == "sum"  # the older builders are untouched


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("PLW_PLUGINS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "plw-plugins"
    monkeypatch.setenv("PLW_PLUGINS_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "flag") == tmp_path / "flag"


def test_pretraining_learns_the_general_text_and_is_cached(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    settings = PretrainSettings(steps=40, batch_size=8, text_rows=256)
    messages = []
    folder = pretrained_model(settings, tmp_path, report=messages.append)
    assert folder.parent == tmp_path and folder.name == f"tiny-llama-{settings.key()}"
    assert not list(tmp_path.glob(".staging-*"))
    weights = (folder / "model.safetensors").stat().st_mtime_ns
    assert pretrained_model(settings, tmp_path, report=messages.append) == folder
    assert "pre-training" in messages[0] and "(cached)" in messages[1]
    assert (folder / "model.safetensors").stat().st_mtime_ns == weights
    assert PretrainSettings(steps=41).key() != PretrainSettings(steps=40).key()

    tokenizer = AutoTokenizer.from_pretrained(folder)
    trained = AutoModelForCausalLM.from_pretrained(folder)
    torch.manual_seed(settings.seed)
    fresh = LlamaForCausalLM(trained.config)
    _, held_out = general_text_split(settings.text_rows, 16, settings.seed)
    ids = [row + [tokenizer.eos_token_id] for row in tokenizer(held_out, add_special_tokens=False)["input_ids"]]
    batch = dict(zip(("input_ids", "attention_mask", "labels"), pad_batch(ids, tokenizer.pad_token_id)))
    with torch.no_grad():
        assert trained(**batch).loss < fresh(**batch).loss - 1.0


def result(weight, distance, general, train_completion, held_out_completion, train_prompt=3.0):
    start = Measurements(2.5, 5.0, 2.5, 5.0, 1.5, 0.0)
    end = Measurements(train_prompt, train_completion, 3.0, held_out_completion, general, distance)
    return WeightResult(weight, start, end, {}, {}, [])


def test_what_the_numbers_show_follows_the_numbers():
    results = [result(0, 0.20, 1.9, 1.0, 2.0), result(0.1, 0.15, 1.7, 1.2, 1.5), result(1, 0.25, 2.2, 1.4, 1.8)]
    line = what_the_numbers_show(results)
    assert "moved least at PLW 0.1 (0.150)" in line and "forgotten least at PLW 0.1 (1.700, 1.500 at the start)" in line
    assert "smallest at PLW 0.1 (+0.300)" in line and "lowest at PLW 0.1 (1.500)" in line
    assert "as the study found (§5.3), PLW 0.1 kept the weights closer" in line

    results = [result(0, 0.10, 1.6, 1.0, 1.2), result(0.1, 0.15, 1.7, 1.2, 1.5), result(1, 0.25, 2.2, 1.9, 1.8)]
    line = what_the_numbers_show(results)
    assert "moved least at PLW 0 (0.100)" in line and "forgotten least at PLW 0 " in line
    assert "smallest at PLW 1 (-0.100)" in line
    assert "unlike the study (§5.3), no small non-zero PLW kept the weights closer" in line
    assert "\n" not in line


def test_prompt_loss_rise_note_only_when_it_rose():
    assert prompt_loss_rise_note([result(0, 0.1, 1.6, 1.0, 1.2, train_prompt=2.4)]) is None
    note = prompt_loss_rise_note([result(0, 0.1, 1.6, 1.0, 1.2, train_prompt=3.1), result(1, 0.1, 1.6, 1.0, 1.2)])
    assert note.startswith("Note: at PLW 0 the training prompt loss rose from 2.500 at the start to 3.100.")
