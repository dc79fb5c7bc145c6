"""Per-role and per-message weights on ``type: chat_template`` data, through real ``axolotl train`` runs.

Four conversations, each a system prompt, a user turn, an assistant turn, a tool result and a last
assistant turn; one row carries per-message ``weight`` on three messages. Every run's first
optimiser step covers all four rows, so its logged loss and gradient norm must equal a hand
computation: the roles of every token found here from the tiny chat template's pieces (not by the
plugin's code), Axolotl's own labels for what it trains, the rule of ``LossWeights``, and a plain
forward and backward of the initial model over each row.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from axolotl_harness import CHAT, plugin, run_axolotl, write_config

from plw_plugins.masks import IGNORE_INDEX
from plw_plugins.roles import Role

pytestmark = [pytest.mark.axolotl, pytest.mark.slow]

SYSTEM = "You are a careful assistant. Answer briefly and check every sum with the calculator."
TASKS = [
    ("What is 2 plus 3?", "5", "The answer is 5."),
    ("What is 7 plus 8?", "15", "It is 15."),
    ("Add 10 and 4.", "14", "That makes 14."),
    ("What is 1 plus 1?", "2", "One plus one is 2."),
]
MESSAGE_WEIGHTS = {1: {1: 0.5, 2: 1.0, 3: 0.25}}
"""Row -> message index -> ``weight``: the user turn, the earlier assistant turn, the tool result."""


def conversations(*, weighted: bool = True) -> list[dict]:
    """The four conversations; ``weighted``: with the per-message weights of ``MESSAGE_WEIGHTS``."""
    rows = []
    for index, (question, result, answer) in enumerate(TASKS):
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": "Let me use the calculator."},
            {"role": "tool", "content": result},
            {"role": "assistant", "content": answer},
        ]
        for message, weight in (MESSAGE_WEIGHTS.get(index, {}) if weighted else {}).items():
            messages[message]["weight"] = weight
        rows.append({"messages": messages})
    return rows


ROLE_KEYS = {"system_loss_weight": 0.0, "template_loss_weight": 0.0, "history_loss_weight": 0.0,
             "loss_normalization": "token_count"}
PACKED = {"sample_packing": True, "micro_batch_size": 1}
CHAT_CONFIG = {"chat_template": "tokenizer_default", "sequence_len": 512}
VARIANT_DATASET = {"roles_to_train": ["user", "assistant"], "train_on_eos": "none"}

# Name -> (data: "plain" without per-message weights, "weighted", "variant" = weighted with
# VARIANT_DATASET, "bad"), config overrides. Stock Axolotl's packed step equals its padded one here
# (one step, every row), so both plugin runs at PLW 0 compare with the one stock run.
RUNS: dict[str, tuple[str, dict]] = {
    "stock": ("plain", {"train_on_inputs": False}),
    "plw_0": ("plain", plugin(0.0)),
    "plw_0_packed": ("plain", {**plugin(0.0), **PACKED}),
    "roles": ("weighted", plugin(0.1, **ROLE_KEYS)),
    "roles_packed": ("weighted", {**plugin(0.1, **ROLE_KEYS), **PACKED}),
    "roles_accumulated": ("weighted", {**plugin(0.1, **ROLE_KEYS), "micro_batch_size": 2, "gradient_accumulation_steps": 2}),
    # What Axolotl trains changes (user turns, no end of turn); evaluation on the same rows.
    "roles_to_train_packed_eval": ("variant", {
        **plugin(0.1, **ROLE_KEYS, tool_loss_weight=0.5), **PACKED, "eval_sample_packing": False,
        "eval_batch_size": 4, "eval_strategy": "steps", "eval_steps": 1,
    }),
    "bad_weight": ("bad", plugin(0.1)),
}


@pytest.fixture(scope="module")
def role_runs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("axolotl-roles")
    bad_rows = conversations()
    bad_rows[2]["messages"][4]["weight"] = 1.5
    files = {"plain": conversations(weighted=False), "weighted": conversations(), "bad": bad_rows}
    for data, rows in files.items():
        (root / f"{data}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    paths = {}
    for name, (data, overrides) in RUNS.items():
        (root / name).mkdir()
        dataset = {**CHAT, "path": str(root / f"{'weighted' if data == 'variant' else data}.jsonl")}
        extra = {}
        if data == "variant":
            dataset = {**dataset, **VARIANT_DATASET}
            extra = {"test_datasets": [{**dataset, "split": "train"}]}
        paths[name] = write_config(root / name, tiny_model_dir, dataset, {**CHAT_CONFIG, **overrides, **extra})
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = dict(zip(paths, pool.map(run_axolotl, paths.values())))
    return {name: (run, paths[name].parent) for name, run in runs.items()}


# ---- the hand computation ------------------------------------------------------------------


def template_pieces(messages: list[dict], tokenizer, *, eos_trained: bool) -> list[tuple[str, int, int]]:
    """The tiny chat template (``tiny_model.CHAT_TEMPLATE``) rendered piece by piece: (text, role,
    owning message or -1). An assistant's end of turn belongs to its turn where Axolotl trains it;
    the newline after ``{% endgeneration %}`` is trimmed (transformers renders with ``trim_blocks``)."""
    last_assistant = max(i for i, message in enumerate(messages) if message["role"] == "assistant")
    content_role = {"system": Role.SYSTEM, "user": Role.PROMPT, "tool": Role.TOOL}
    pieces = [(tokenizer.bos_token, Role.TEMPLATE, -1)]
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "assistant":
            own = Role.COMPLETION if index == last_assistant else Role.HISTORY
            pieces += [("<|assistant|>\n", Role.TEMPLATE, -1), (message["content"], own, index),
                       (tokenizer.eos_token, own, index) if eos_trained else (tokenizer.eos_token, Role.TEMPLATE, -1)]
        else:
            pieces += [(f"<|{role}|>\n", Role.TEMPLATE, -1), (message["content"], content_role[role], index),
                       ("\n", Role.TEMPLATE, -1)]
    return pieces


def token_roles(messages: list[dict], tokenizer, *, eos_trained: bool) -> tuple[list[int], list[int], list[float]]:
    """Token ids, roles and message weights (-1 where none) of one conversation."""
    ids, roles, weights = [], [], []
    for text, role, owner in template_pieces(messages, tokenizer, eos_trained=eos_trained):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        weight = messages[owner].get("weight", -1.0) if owner >= 0 else -1.0
        ids += piece
        roles += [int(role)] * len(piece)
        weights += [float(weight)] * len(piece)
    return ids, roles, weights


def target_weight(role: int, trained: bool, message_weight: float, keys: dict, prompt: float) -> float:
    """The rule of ``LossWeights`` for one next-token target, written out."""
    if message_weight >= 0:
        return message_weight
    if role == Role.HISTORY and keys.get("history_loss_weight") is not None:
        return keys["history_loss_weight"]
    if trained:
        return keys.get("completion_loss_weight", 1.0)
    by_role = {Role.SYSTEM: "system_loss_weight", Role.TOOL: "tool_loss_weight", Role.TEMPLATE: "template_loss_weight"}
    if role in by_role and keys.get(by_role[role]) is not None:
        return keys[by_role[role]]
    return prompt


def prepared_rows(run_dir: Path) -> list[dict]:
    """The rows as Axolotl prepared them (``dataset_prepared_path``; training and evaluation sets)."""
    from datasets import load_from_disk

    paths = sorted(path for path in (run_dir / "prepared").iterdir() if path.is_dir())
    assert paths, f"nothing prepared in {run_dir}"
    return [row for path in paths for row in load_from_disk(str(path))]


def hand_step(model_dir: Path, run_dir: Path, keys: dict, prompt: float, *, eos_trained: bool,
              weighted: bool = True) -> dict[str, float]:
    """Loss, gradient norm and mean NLL per role of one step over every row, by hand."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    prepared = {tuple(row["input_ids"]): row["labels"] for row in prepared_rows(run_dir)}
    assert len(prepared) == len(TASKS)
    total, normaliser, role_nll, role_count = torch.zeros(()), 0.0, {}, {}
    for row in conversations(weighted=weighted):
        ids, roles, message_weights = token_roles(row["messages"], tokenizer, eos_trained=eos_trained)
        labels = prepared[tuple(ids)]  # Axolotl's tokens are the template's, piece by piece
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
        weights = torch.tensor([
            target_weight(roles[t], labels[t] != IGNORE_INDEX, message_weights[t], keys, prompt) for t in range(1, len(ids))
        ])
        total = total + (weights * nll).sum()
        normaliser += float((weights > 0).sum()) if keys.get("loss_normalization") == "token_count" else float(weights.sum())
        for role in (Role.SYSTEM, Role.TOOL, Role.TEMPLATE, Role.HISTORY):
            in_role = torch.tensor(roles[1:]) == role
            role_nll[role] = role_nll.get(role, 0.0) + float(nll[in_role].detach().sum())
            role_count[role] = role_count.get(role, 0) + int(in_role.sum())
    loss = total / normaliser
    loss.backward()
    grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
    metrics = {f"{role.name.lower()}_loss": role_nll[role] / role_count[role] for role in role_nll}
    return {"loss": float(loss), "grad_norm": float(grad_norm), **metrics}


def assert_step_is(step: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert step[key] == pytest.approx(value, rel=1e-5), (key, step[key], value)


# ---- the tests -----------------------------------------------------------------------------


def test_keys_unset_train_as_stock_axolotl_and_log_the_roles(role_runs, tiny_model_dir):
    """PLW 0, no role key, no per-message weight: stock ``train_on_inputs: false`` (padded and
    packed), with a mean NLL logged for every role the data holds."""
    for name, stock in (("plw_0", "stock"), ("plw_0_packed", "stock")):
        step, expected = role_runs[name][0].step(1), role_runs[stock][0].step(1)
        assert step["loss"] == pytest.approx(expected["loss"], rel=1e-5), name
        assert step["grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-5), name
        for key in ("prompt_loss", "completion_loss", "system_loss", "tool_loss", "template_loss", "history_loss"):
            assert math.isfinite(step[key]) and step[key] > 0, (name, key)
    # The role metrics are the mean NLL of each role's tokens, by hand.
    expected = hand_step(tiny_model_dir, role_runs["plw_0"][1], {}, 0.0, eos_trained=True, weighted=False)
    for name in ("plw_0", "plw_0_packed"):
        assert_step_is(role_runs[name][0].step(1), expected)


def test_the_roles_survive_preparation(role_runs):
    """Axolotl's prepared rows keep one role and one message weight per token, as the template's
    pieces give them, packed or not."""
    from transformers import AutoTokenizer

    for name in ("roles", "roles_packed"):
        run_dir = role_runs[name][1]
        rows = prepared_rows(run_dir)
        tokenizer = AutoTokenizer.from_pretrained(json.loads((run_dir / "config.yml").read_text())["base_model"])
        expected = {}
        for row in conversations():
            ids, roles, weights = token_roles(row["messages"], tokenizer, eos_trained=True)
            expected[tuple(ids)] = (roles, weights)
        for row in rows:
            assert (row["plw_roles"], row["plw_message_weights"]) == expected[tuple(row["input_ids"])], name


@pytest.mark.parametrize("name", ["roles", "roles_packed", "roles_accumulated"])
def test_role_weights_equal_the_hand_computation(role_runs, tiny_model_dir, name):
    """System 0 with prompt 0.1, template 0, history 0, per-message weights, token-count
    normalisation: loss, gradient and role metrics of the first step, padded, packed and as two
    accumulated micro-batches."""
    run, run_dir = role_runs[name]
    expected = hand_step(tiny_model_dir, run_dir, ROLE_KEYS, 0.1, eos_trained=True)
    assert_step_is(run.step(1), expected)


def test_roles_to_train_and_train_on_eos_keep_what_axolotl_trains(role_runs, tiny_model_dir):
    """``roles_to_train: [user, assistant]``, ``train_on_eos: none``: Axolotl trains the user and
    assistant content and no end of turn, which stays scaffolding (template weight). Evaluation
    logs the role losses too."""
    from transformers import AutoTokenizer

    run, run_dir = role_runs["roles_to_train_packed_eval"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pieces = {}
    for row in conversations():
        ids, roles, _ = token_roles(row["messages"], tokenizer, eos_trained=False)
        pieces[tuple(ids)] = [role in (Role.PROMPT, Role.COMPLETION, Role.HISTORY) for role in roles]
    for row in prepared_rows(run_dir):
        assert [label != IGNORE_INDEX for label in row["labels"]] == pieces[tuple(row["input_ids"])]
    keys = {**ROLE_KEYS, "tool_loss_weight": 0.5}
    expected = hand_step(tiny_model_dir, run_dir, keys, 0.1, eos_trained=False)
    assert_step_is(run.step(1), expected)
    # Axolotl evaluates the initial model first, on the same rows: the same loss and role losses.
    evaluations = {log["step"]: log for log in run.eval_logs()}
    assert sorted(evaluations) == [0, 1]
    del expected["grad_norm"]
    assert_step_is({key: evaluations[0][f"eval_{key}"] for key in expected}, expected)
    for key in ("eval_loss", "eval_prompt_loss", "eval_completion_loss", "eval_system_loss", "eval_tool_loss",
                "eval_template_loss", "eval_history_loss"):
        assert math.isfinite(evaluations[1][key]) and evaluations[1][key] > 0, key


def test_a_bad_message_weight_stops_before_training_naming_row_message_and_value(role_runs):
    run, _ = role_runs["bad_weight"]
    assert run.returncode != 0
    assert "row 2, message 4: weight must be a number in [0, 1], got 1.5" in run.output
    assert not run.log_history
