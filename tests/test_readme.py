"""The README's snippets, run as written on the built-in tiny model, so that they cannot rot.

Each snippet follows a ``<!-- snippet: NAME -->`` marker. Where a snippet names a hub model or a
user's file, the test swaps in a local one; every swap must find its text, so a README edit that
detaches a snippet from its test fails here.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from plw_plugins.cli.builtin_data import instruction_rows

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def snippet(name: str, replacements: dict[str, str] | None = None) -> str:
    match = re.search(rf"<!-- snippet: {name} -->\s*```(?:python|yaml)\n(.*?)```", README, re.S)
    assert match, f"README has no snippet {name!r}"
    code = match.group(1)
    for old, new in (replacements or {}).items():
        assert old in code, f"snippet {name!r} no longer contains {old!r}"
        code = code.replace(old, new)
    return code


def test_the_readme_opens_with_the_two_commands_and_ci_runs_the_test_command():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert README.index("```bash") < README.index("\n## ")
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def _tiny_batch(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = instruction_rows(4)
    ids = [tokenizer(r["prompt"] + r["completion"]).input_ids for r in rows]
    prompt_lengths = [len(tokenizer(r["prompt"]).input_ids) for r in rows]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)
    attention_mask = torch.zeros_like(input_ids)
    for row, (tokens, prompt) in enumerate(zip(ids, prompt_lengths)):
        input_ids[row, : len(tokens)] = torch.tensor(tokens)
        attention_mask[row, : len(tokens)] = 1
    labels = torch.where(attention_mask.bool(), input_ids, -100)
    for row, prompt in enumerate(prompt_lengths):
        labels[row, :prompt] = -100
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def test_core_snippet(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = _tiny_batch(tiny_model_dir)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    namespace = {**batch, "logits": logits}
    exec(snippet("core"), namespace)
    out = namespace["out"]
    assert math.isfinite(out.loss.item()) and out.prompt_tokens > 0 and out.completion_tokens > 0
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


def test_chat_core_snippet_weighs_the_system_prompt_at_its_own_weight(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from plw_plugins import Role

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    conversations = [
        [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": row["prompt"]},
         {"role": "assistant", "content": row["completion"]}]
        for row in instruction_rows(3)
    ]
    namespace = {"conversations": conversations, "tokenizer": tokenizer, "model": model}
    exec(snippet("chat-core"), namespace)
    out, batch, masks = namespace["out"], namespace["batch"], namespace["masks"]
    system_tokens = int(((batch["plw_roles"][:, 1:] == Role.SYSTEM) & masks.prompt).sum())
    assert out.role_tokens[0].item() == system_tokens > 0
    # The system tokens weigh 0: the loss is that of the same batch with them masked out of the prompt.
    logits = namespace["logits"]
    expected = _loss_without_system_prompt(logits, masks)
    torch.testing.assert_close(out.loss, expected)


def _loss_without_system_prompt(logits, masks):
    from plw_plugins import Role

    nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), masks.targets.flatten(), reduction="none")
    weights = masks.completion.float() + 0.1 * (masks.prompt & (masks.roles != Role.SYSTEM)).float()
    return (weights.flatten() * nll).sum() / weights.sum()


def test_policy_snippet_registers_a_policy_that_the_config_uses():
    from plw_plugins import PromptLossWeightConfig
    from plw_plugins.plugins import get_plugin_manager

    module = types.ModuleType("readme_policies")
    exec(snippet("policy"), module.__dict__)
    manager = get_plugin_manager()
    manager.register(module)
    try:
        config = PromptLossWeightConfig(0.2, "step", 0.6)
        assert (config.weight_at(0.25), config.weight_at(0.75)) == (0.2, 0.6)
    finally:
        manager.unregister(module)


def sample_row() -> dict:
    match = re.search(r"<!-- sample: train.jsonl -->\s*```json\n(.*?)```", README, re.S)
    assert match, "README has no sample row of train.jsonl"
    (line,) = match.group(1).strip().splitlines()
    return json.loads(line)


def test_the_sample_row_is_a_row_of_the_built_in_data():
    row = sample_row()
    assert set(row) == {"prompt", "completion"}
    assert row in [{"prompt": r["prompt"], "completion": r["completion"]} for r in instruction_rows(16)]


@pytest.mark.slow
def test_trl_snippet(tiny_model_dir, tmp_path, monkeypatch):
    """As written (TRL's defaults: 3 epochs, bf16 where a GPU has it), on 32 built-in rows in the
    README's sample format; only the hub model name becomes the local tiny model."""
    monkeypatch.chdir(tmp_path)
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in instruction_rows(32)]
    assert sample_row() in rows
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    namespace: dict = {}
    exec(snippet("trl", {'"Qwen/Qwen2.5-0.5B"': repr(str(tiny_model_dir))}), namespace)
    trainer = namespace["trainer"]
    assert trainer.args.bf16 == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert trainer.state.global_step == 12  # 32 rows, batches of 8, 3 epochs
    logged = [entry for entry in trainer.state.log_history if "prompt_loss" in entry]
    assert logged and all(math.isfinite(e["prompt_loss"]) and math.isfinite(e["completion_loss"]) for e in logged)
    assert logged[0]["prompt_loss_weight"] == 0.1


@pytest.mark.slow
def test_lightning_snippet(tmp_path, monkeypatch):
    """As written: the built-in tiny model and loader, 50 steps."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(snippet("lightning"), namespace)
    trainer = namespace["trainer"]
    assert trainer.global_step == 50
    assert math.isfinite(float(trainer.callback_metrics["train/completion_loss"]))
    assert float(trainer.callback_metrics["train/prompt_loss"]) > 0
    assert float(trainer.callback_metrics["train/prompt_loss_weight"]) == pytest.approx(0.1)


def test_trl_chat_snippet_logs_the_system_prompt_loss(tmp_path, monkeypatch):
    """As written, in an empty folder: the built-in tiny model, two steps."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(snippet("trl-chat"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 2 and trainer.args.system_loss_weight == 0.0
    logs = [entry for entry in trainer.state.log_history if "system_loss" in entry]
    assert logs and all(math.isfinite(entry["system_loss"]) and "template_loss" in entry for entry in logs)


def test_chat_lightning_snippet_logs_the_system_prompt_loss(tmp_path, monkeypatch):
    """As written: the built-in tiny model, one epoch of a chat with a system prompt at weight 0."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(snippet("chat-lightning"), namespace)
    trainer = namespace["trainer"]
    callback = next(c for c in trainer.callbacks if isinstance(c, namespace["PromptLossWeight"]))
    assert trainer.global_step == 4
    assert callback.config.system_loss_weight == 0.0
    for name in ("train/system_loss", "train/template_loss", "train/completion_loss"):
        assert math.isfinite(float(trainer.logged_metrics[name]))


def test_the_license_is_the_mit_license_pyproject_names():
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the plw-plugins authors\n")
    assert "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND" in text


def test_plw_plugins_help_lists_every_command_the_readme_uses():
    out = subprocess.run([sys.executable, "-m", "plw_plugins.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for command in ("demo", "stats", "sft", "tiny-model"):
        assert f"plw-plugins {command}" in README and f"  {command}" in out
