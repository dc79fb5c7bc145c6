"""`plw-plugins stats` loss shares by role: a hand computation from the token counts of each role, the
weight flags as the rule in ``LossWeights`` says, the core's roles reproduced exactly by stats' batched
counting, bad flag values, and real shared data."""

from __future__ import annotations

import json

import pytest

from plw_plugins.cli.builtin_data import instruction_messages
from plw_plugins.cli.datasets import ALPACA_TEMPLATE_NO_INPUT
from plw_plugins.cli.stats import conversation_tokens, main
from plw_plugins.conversations import tokenize_conversation
from plw_plugins.masks import IGNORE_INDEX

from .helpers import SHARED_DATA, WORDS, pretokens, run_error, run_json, write_jsonl

SYSTEM_PROMPT = " ".join(WORDS * 3)  # 36 tokens
CONVERSATION = [
    {"role": "system", "content": SYSTEM_PROMPT},
    {"role": "user", "content": "alpha beta"},
    {"role": "assistant", "content": "gamma delta epsilon"},
    {"role": "tool", "content": "zeta eta"},
    {"role": "user", "content": "theta"},
    {"role": "assistant", "content": "iota kappa"},
]
# Next-token targets by role in the word tokenizer's rendering of CONVERSATION (every token but <s>):
# six role headers; each assistant turn's </s> is trained with it, so it belongs to that turn.
TARGETS = {"system": 36, "prompt": 3, "tool": 2, "template": 6, "history": 3 + 1, "completion": 2 + 1}
CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"


def hand_shares(counts: dict[str, int], prompt: float, completion: float = 1.0, system=None, tool=None, template=None,
                history=None, message_weights: dict[str, tuple[int, float]] | None = None) -> dict[str, float]:
    """The rule written out for this data, where every history token is trained: masked roles take their
    own weight or the prompt's, history its own or the completion's; ``message_weights`` moves
    ``(targets, weight)`` of a role to a message's own weight."""
    weight = {
        "system": prompt if system is None else system,
        "prompt": prompt,
        "tool": prompt if tool is None else tool,
        "template": prompt if template is None else template,
        "history": completion if history is None else history,
        "completion": completion,
    }
    weighted = {role: count * weight[role] for role, count in counts.items()}
    for role, (targets, own) in (message_weights or {}).items():
        weighted[role] += targets * (own - weight[role])
    total = sum(weighted.values())
    return {role: value / total for role, value in weighted.items()}


def shares(got: dict) -> dict[str, float]:
    return {role: share["share"] for role, share in got["loss_shares"].items()}


@pytest.mark.parametrize(("flags", "rule"), [
    ((), {"prompt": 0.1}),
    (("--prompt-loss-weight", "0.5"), {"prompt": 0.5}),
    (("--system-loss-weight", "0"), {"prompt": 0.1, "system": 0.0}),
    (("--history-loss-weight", "0", "--template-loss-weight", "0"), {"prompt": 0.1, "history": 0.0, "template": 0.0}),
    (("--prompt-loss-weight", "0", "--tool-loss-weight", "1", "--completion-loss-weight", "0.5"),
     {"prompt": 0.0, "tool": 1.0, "completion": 0.5}),
    (("--prompt-loss-weight", "1", "--system-loss-weight", "0.2", "--history-loss-weight", "0.3"),
     {"prompt": 1.0, "system": 0.2, "history": 0.3}),
])
def test_conversation_shares_equal_a_hand_computation(capsys, tmp_path, word_tokenizer_dir, flags, rule):
    """A long system prompt, a tool result and two assistant turns: each role's share of the loss is its
    targets times its weight over the total, and the flags move the weights as the rule says."""
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}] * 2)
    got = run_json(capsys, path, "--tokenizer", word_tokenizer_dir, *flags)
    assert {role: share["targets"] for role, share in got["loss_shares"].items()} == {r: 2 * n for r, n in TARGETS.items()}
    expected = hand_shares(TARGETS, **rule)
    assert shares(got) == {role: round(share, 3) for role, share in expected.items()}
    assert list(got["loss_shares"]) == ["system", "prompt", "tool", "template", "history", "completion"]
    assert got["loss_weights"]["prompt"] == rule["prompt"]
    assert sum(got["role_tokens"].values()) == 2 * (sum(TARGETS.values()) + 1)  # and <s>, which is no target


def test_report_and_advice_name_the_system_prompts_share(capsys, tmp_path, word_tokenizer_dir):
    """The text report shows each role's targets, weight and share; the advice names the system prompt's
    share and the key that takes it out of the loss, and is gone once that key is 0."""
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}])
    system = hand_shares(TARGETS, prompt=0.1)["system"]
    assert system > 0.2
    assert main([str(path), "--tokenizer", str(word_tokenizer_dir)]) == 0
    report = capsys.readouterr().out
    assert "loss share by role at prompt_loss_weight 0.1 (every assistant turn trained" in report
    assert f"  system prompt{36:>31,}{0.1:>12.3f}{100 * system:>8.1f}%" in report
    assert f"SYSTEM PROMPT: {100 * system:.0f}% of the loss at prompt_loss_weight 0.1 falls on system prompt tokens" in report
    assert "`system_loss_weight: 0`" in report

    got = run_json(capsys, path, "--tokenizer", word_tokenizer_dir, "--system-loss-weight", "0")
    assert got["loss_shares"]["system"] == {"targets": 36, "weight": 0.0, "share": 0.0}
    assert not any(paragraph.startswith("SYSTEM PROMPT") for paragraph in got["advice"])
    assert hand_shares(TARGETS, prompt=0.1)["template"] < 0.2 and not any(p.startswith("CHAT TEMPLATE") for p in got["advice"])
    short = [{"role": "user", "content": "alpha"}, {"role": "assistant", "content": "beta"}]
    got = run_json(capsys, write_jsonl(tmp_path / "short.jsonl", [{"messages": short}]), "--tokenizer", word_tokenizer_dir,
                   "--prompt-loss-weight", "1")
    # targets: <|user|>, alpha, <|assistant|>, beta, </s>: the template is 2 of 5
    assert shares(got) == {"prompt": 0.2, "template": 0.4, "completion": 0.4}
    assert any(paragraph.startswith("CHAT TEMPLATE: 40% of the loss at prompt_loss_weight 1") and
               "`template_loss_weight: 0`" in paragraph for paragraph in got["advice"])


def test_message_weights_from_the_data_override_the_roles(capsys, tmp_path, word_tokenizer_dir):
    """A ``weight`` on a message weighs its tokens, trained scaffolding of its turn included, whatever the
    flags; a weight outside [0, 1] is an error naming the row, the message and the value."""
    weighted = [dict(message) for message in CONVERSATION]
    weighted[0]["weight"] = 0.0
    weighted[2]["weight"] = 0.5
    path = write_jsonl(tmp_path / "weighted.jsonl", [{"messages": weighted}])
    got = run_json(capsys, path, "--tokenizer", word_tokenizer_dir, "--history-loss-weight", "1", "--system-loss-weight", "1")
    expected = hand_shares(TARGETS, prompt=0.1, history=1.0, system=1.0,
                           message_weights={"system": (36, 0.0), "history": (4, 0.5)})
    assert shares(got) == {role: round(share, 3) for role, share in expected.items()}
    assert got["loss_shares"]["history"]["weight"] == 0.5

    weighted[2]["weight"] = 1.5
    err = run_error(capsys, write_jsonl(tmp_path / "bad.jsonl", [{"messages": weighted}]), "--tokenizer", word_tokenizer_dir)
    assert err == "plw-plugins stats: error: row 0, message 2: weight must be a number in [0, 1], got 1.5\n"


def test_alpaca_template_is_its_own_role(capsys, tmp_path, word_tokenizer_dir):
    """Alpaca rows: the package's prompt template is ``template``, the instruction ``prompt``, the output
    and its eos ``completion``; the first token of each row (the template's) is no target."""
    rows = [{"instruction": "alpha beta gamma", "output": "delta"}, {"instruction": "epsilon", "output": "zeta eta theta"}]
    path = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    template = sum(pretokens(ALPACA_TEMPLATE_NO_INPUT.format(instruction=r["instruction"])) - pretokens(r["instruction"]) for r in rows)
    counts = {"prompt": 4, "template": template - 2, "completion": 4 + 2}
    for flags, rule in (((), {"prompt": 0.1}), (("--template-loss-weight", "0", "--prompt-loss-weight", "1"), {"prompt": 1.0, "template": 0.0})):
        got = run_json(capsys, path, "--tokenizer", word_tokenizer_dir, *flags)
        assert {role: share["targets"] for role, share in got["loss_shares"].items()} == counts
        assert shares(got) == {role: round(share, 3) for role, share in hand_shares(counts, **rule).items()}
    text = write_jsonl(tmp_path / "text.jsonl", [{"prompt": "alpha beta\n", "completion": "gamma"}])
    assert run_json(capsys, text, "--tokenizer", word_tokenizer_dir)["loss_shares"] == {
        "prompt": {"targets": 1, "weight": 0.1, "share": round(0.1 / 2.1, 3)},
        "completion": {"targets": 2, "weight": 1.0, "share": round(2 / 2.1, 3)},
    }


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--system-loss-weight", "1.5", "system_loss_weight must be a number in [0, 1], got 1.5"),
    ("--prompt-loss-weight", "nan", "prompt_loss_weight must be a number in [0, 1], got nan: not a number"),
    ("--tool-loss-weight", "much", "tool_loss_weight must be a number in [0, 1], got 'much' (str)"),
    ("--history-loss-weight", "-0.1", "history_loss_weight must be a number in [0, 1], got -0.1"),
    ("--template-loss-weight", "", "template_loss_weight must be a number in [0, 1], got '' (str)"),
    ("--completion-loss-weight", "0", "completion_loss_weight must be a number in (0, 1], got 0.0"),
])
def test_bad_weight_flags_are_one_line_errors(capsys, tmp_path, word_tokenizer_dir, flag, value, message):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}])
    err = run_error(capsys, path, "--tokenizer", word_tokenizer_dir, flag, value)
    assert err.startswith(f"plw-plugins stats: error: {message}") and err.count("\n") == 1


def chat_rows(records: list[dict], system: str) -> list[list[dict]]:
    return [[{"role": "system", "content": system}, {"role": "user", "content": r["instruction"]},
             {"role": "assistant", "content": r["output"]}] for r in records]


@pytest.mark.parametrize("template", ["tiny", "chatml"])
def test_batched_roles_equal_the_cores(tiny_model_dir, template):
    """Stats counts roles in batches; every token's role, trained flag and message weight equals the core's
    ``tokenize_conversation``, with ``{% generation %}`` markers (the tiny template) and without (ChatML,
    content and end of turn), on shared data, the hand-made conversation and the built-in chats."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    if template == "chatml":
        tokenizer.chat_template = CHATML
    records = json.loads((SHARED_DATA / "gpteacher_toolformer_alpaca.json").read_text())[:40]
    weighted = [dict(message) for message in CONVERSATION]
    weighted[2]["weight"], weighted[3]["content"] = 0.25, "  zeta eta \n"
    conversations = chat_rows(records, "Use the tools.") + [CONVERSATION, weighted]
    conversations += [row["messages"] for row in instruction_messages(10)]
    # contents that also occur in the scaffolding ("system" in <|system|>): placed where the core places them
    conversations.append([{"role": "system", "content": "system"}, {"role": "user", "content": "a"},
                          {"role": "assistant", "content": "e"}])
    got, unlocated = conversation_tokens(conversations, tokenizer)
    assert unlocated == 0
    roles_seen = set()
    for index, (messages, tokens) in enumerate(zip(conversations, got)):
        core = tokenize_conversation(messages, tokenizer, row=index)
        assert tokens.input_ids == core["input_ids"]
        assert tokens.trained.tolist() == [label != IGNORE_INDEX for label in core["labels"]]
        assert tokens.roles.tolist() == core["plw_roles"]
        assert tokens.message_weights.tolist() == core["plw_message_weights"]
        roles_seen.update(core["plw_roles"])
    assert roles_seen == set(range(6))


def test_real_shared_data(capsys, tmp_path, tiny_model_dir):
    """GSM8K from ../shared/data, as Alpaca and as chats with a system prompt: the Alpaca shares follow
    from the trained counts stats reports (the first token of each row, the template's, is no target),
    and the chat's system prompt share moves with --system-loss-weight."""
    records = json.loads((SHARED_DATA / "gsm8k_train_alpaca.json").read_text())[:200]
    alpaca = tmp_path / "gsm8k.json"
    alpaca.write_text(json.dumps(records))
    got = run_json(capsys, alpaca, "--tokenizer", tiny_model_dir, "--prompt-loss-weight", "0.2")
    template, prompt = got["template_tokens"] - 200, got["trained_prompt_tokens"] - got["template_tokens"]
    completion = got["trained_completion_tokens"]
    assert {role: share["targets"] for role, share in got["loss_shares"].items()} == {
        "prompt": prompt, "template": template, "completion": completion
    }
    total = 0.2 * (prompt + template) + completion
    assert shares(got) == {"prompt": round(0.2 * prompt / total, 3), "template": round(0.2 * template / total, 3),
                           "completion": round(completion / total, 3)}

    system = "You are a careful math tutor. Solve each problem step by step and end with the answer after ####."
    chat = write_jsonl(tmp_path / "gsm8k.jsonl", [{"messages": m} for m in chat_rows(records, system)])
    at_one = run_json(capsys, chat, "--tokenizer", tiny_model_dir, "--prompt-loss-weight", "1")
    off = run_json(capsys, chat, "--tokenizer", tiny_model_dir, "--prompt-loss-weight", "1", "--system-loss-weight", "0")
    assert at_one["loss_shares"]["system"]["targets"] == at_one["role_tokens"]["system"] > 0
    assert at_one["loss_shares"]["system"]["share"] > 0.05 and off["loss_shares"]["system"]["share"] == 0.0
    assert sum(shares(at_one).values()) == pytest.approx(1, abs=0.003)
    for role in ("prompt", "template", "completion"):
        assert off["loss_shares"][role]["share"] > at_one["loss_shares"][role]["share"]
