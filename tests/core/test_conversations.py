"""``tokenize_conversation`` on real chat templates: the role, training label and message weight of
every token against hand expectations, written as the runs of text that share them.

Templates: the tiny tokenizer's (with ``{% generation %}``), the same without the markers, ChatML,
Llama 3 (content trimmed, ``<|eot_id|>``) and a plain-text one; then content the tokenizer splits
differently inside the conversation than alone, short contents that also occur in the scaffolding,
and the errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from plw_plugins import IGNORE_INDEX, Role, collate_conversations, tokenize_conversation
from plw_plugins.roles import MESSAGE_WEIGHTS_KEY, NO_MESSAGE_WEIGHT, ROLES_KEY

pytest.importorskip("transformers")

CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
LLAMA3 = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
)
PLAIN_TEXT = "{% for m in messages %}{{ m['role'] | capitalize }}:{{ m['content'] }}\n{% endfor %}"
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

CONVERSATION = [
    {"role": "system", "content": "You are a calculator."},
    {"role": "user", "content": "Add 2 and 3."},
    {"role": "assistant", "content": "5"},
    {"role": "tool", "content": "ok"},
    {"role": "user", "content": "And 4 and 4?"},
    {"role": "assistant", "content": "8", "weight": 0.5},
]

S, P, T, H, C, X = "SYSTEM", "PROMPT", "TOOL", "HISTORY", "COMPLETION", "TEMPLATE"
N = NO_MESSAGE_WEIGHT


@pytest.fixture(scope="module")
def tokenizer():
    from plw_plugins.cli.tiny_model import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS}, replace_extra_special_tokens=False)
    return tokenizer


def runs(tokenizer, row) -> list[tuple[str, str, bool, float]]:
    """The row as runs of consecutive tokens with one (role, trained, message weight): (text, role name,
    trained, weight)."""
    keys = [(Role(r).name, label != IGNORE_INDEX, w) for r, label, w in zip(row[ROLES_KEY], row["labels"], row[MESSAGE_WEIGHTS_KEY])]
    groups: list[tuple[tuple, list[int]]] = []
    for key, token in zip(keys, row["input_ids"]):
        if groups and groups[-1][0] == key:
            groups[-1][1].append(token)
        else:
            groups.append((key, [token]))
    return [(tokenizer.decode(ids), *key) for key, ids in groups]


def without_generation_markers(template: str) -> str:
    return template.replace("{% generation %}", "").replace("{% endgeneration %}", "")


def check_row(tokenizer, row, **template_kwargs) -> None:
    """Invariants of every row: one entry per token, labels the token itself where trained, the ids
    those of the rendered text."""
    assert len(row["input_ids"]) == len(row["labels"]) == len(row[ROLES_KEY]) == len(row[MESSAGE_WEIGHTS_KEY])
    assert all(label in (IGNORE_INDEX, token) for label, token in zip(row["labels"], row["input_ids"]))
    text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, **template_kwargs)
    assert row["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_tiny_template_with_generation_markers(tokenizer):
    row = tokenize_conversation(CONVERSATION, tokenizer)
    check_row(tokenizer, row)
    # Trained: the {% generation %} blocks (content and eos), exactly as transformers' assistant mask.
    mask = tokenizer.apply_chat_template(CONVERSATION, return_dict=True, return_assistant_tokens_mask=True)["assistant_masks"]
    assert [label != IGNORE_INDEX for label in row["labels"]] == [bool(bit) for bit in mask]
    assert runs(tokenizer, row) == [
        ("<s><|system|>\n", X, False, N), ("You are a calculator.", S, False, N), ("\n<|user|>\n", X, False, N),
        ("Add 2 and 3.", P, False, N), ("\n<|assistant|>\n", X, False, N), ("5</s>", H, True, N),
        ("<|tool|>\n", X, False, N), ("ok", T, False, N), ("\n<|user|>\n", X, False, N), ("And 4 and 4?", P, False, N),
        ("\n<|assistant|>\n", X, False, N), ("8</s>", C, True, 0.5),
    ]


def test_tiny_template_without_generation_markers(tokenizer):
    template = without_generation_markers(tokenizer.chat_template)
    row = tokenize_conversation(CONVERSATION, tokenizer, chat_template=template)
    check_row(tokenizer, row, chat_template=template)
    # Without markers the template renders a newline after each eos, which is not trained.
    assert runs(tokenizer, row) == [
        ("<s><|system|>\n", X, False, N), ("You are a calculator.", S, False, N), ("\n<|user|>\n", X, False, N),
        ("Add 2 and 3.", P, False, N), ("\n<|assistant|>\n", X, False, N), ("5</s>", H, True, N),
        ("\n<|tool|>\n", X, False, N), ("ok", T, False, N), ("\n<|user|>\n", X, False, N), ("And 4 and 4?", P, False, N),
        ("\n<|assistant|>\n", X, False, N), ("8</s>", C, True, 0.5), ("\n", X, False, N),
    ]


def test_chatml_trains_content_and_im_end(tokenizer):
    row = tokenize_conversation(CONVERSATION, tokenizer, chat_template=CHATML)
    check_row(tokenizer, row, chat_template=CHATML)
    assert runs(tokenizer, row) == [
        ("<|im_start|>system\n", X, False, N), ("You are a calculator.", S, False, N),
        ("<|im_end|>\n<|im_start|>user\n", X, False, N), ("Add 2 and 3.", P, False, N),
        ("<|im_end|>\n<|im_start|>assistant\n", X, False, N), ("5<|im_end|>", H, True, N),
        ("\n<|im_start|>tool\n", X, False, N), ("ok", T, False, N), ("<|im_end|>\n<|im_start|>user\n", X, False, N),
        ("And 4 and 4?", P, False, N), ("<|im_end|>\n<|im_start|>assistant\n", X, False, N),
        ("8<|im_end|>", C, True, 0.5), ("\n", X, False, N),
    ]


def test_llama3_trims_content_and_trains_eot_id(tokenizer):
    spaced = [dict(m, content=f"  {m['content']} \n") for m in CONVERSATION]
    row = tokenize_conversation(spaced, tokenizer, chat_template=LLAMA3)
    assert runs(tokenizer, row) == [
        ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n", X, False, N),
        ("You are a calculator.", S, False, N),
        ("<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n", X, False, N), ("Add 2 and 3.", P, False, N),
        ("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", X, False, N), ("5<|eot_id|>", H, True, N),
        ("<|start_header_id|>tool<|end_header_id|>\n\n", X, False, N), ("ok", T, False, N),
        ("<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n", X, False, N), ("And 4 and 4?", P, False, N),
        ("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", X, False, N), ("8<|eot_id|>", C, True, 0.5),
    ]


def test_plain_text_template_trains_content_only(tokenizer):
    row = tokenize_conversation(CONVERSATION, tokenizer, chat_template=PLAIN_TEXT)
    assert runs(tokenizer, row) == [
        ("System:", X, False, N), ("You are a calculator.", S, False, N), ("\nUser:", X, False, N),
        ("Add 2 and 3.", P, False, N), ("\nAssistant:", X, False, N), ("5", H, True, N), ("\nTool:", X, False, N),
        ("ok", T, False, N), ("\nUser:", X, False, N), ("And 4 and 4?", P, False, N), ("\nAssistant:", X, False, N),
        ("8", C, True, 0.5), ("\n", X, False, N),
    ]


@pytest.mark.parametrize("markers", [True, False])
def test_a_token_across_the_content_boundary_goes_to_the_content(tokenizer, markers):
    """The template ends its header with ``#`` and the answer starts with ``##``: byte-level BPE merges
    them into one ``###`` token, so the answer's tokens in the conversation are not its tokens alone."""
    template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}A#{% generation %}{{ m['content'] }}</s>"
        "{% endgeneration %}{% else %}U:{{ m['content'] }}\n{% endif %}{% endfor %}"
    )
    template = template if markers else without_generation_markers(template)
    messages = [{"role": "user", "content": "Title?"}, {"role": "assistant", "content": "## Plan"}]
    row = tokenize_conversation(messages, tokenizer, chat_template=template)
    alone = tokenizer("## Plan", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(alone)[0] == "##"
    assert "###" in tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert runs(tokenizer, row) == [
        ("U:", X, False, N), ("Title?", P, False, N), ("\nA", X, False, N), ("### Plan</s>", C, True, N),
    ]


def test_content_starting_with_a_space_and_short_contents_found_in_the_scaffolding(tokenizer):
    """"a" also occurs in ``<|assistant|>``, "system" in the system header, "e" in ``<|im_end|>``: each
    is found where the template puts the message, not earlier."""
    messages = [
        {"role": "system", "content": "system"},
        {"role": "user", "content": " e"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "user"},
        {"role": "assistant", "content": " e"},
    ]
    row = tokenize_conversation(messages, tokenizer, chat_template=CHATML)
    assert runs(tokenizer, row) == [
        ("<|im_start|>system\n", X, False, N), ("system", S, False, N), ("<|im_end|>\n<|im_start|>user\n", X, False, N),
        (" e", P, False, N), ("<|im_end|>\n<|im_start|>assistant\n", X, False, N), ("a<|im_end|>", H, True, N),
        ("\n<|im_start|>user\n", X, False, N), ("user", P, False, N), ("<|im_end|>\n<|im_start|>assistant\n", X, False, N),
        (" e<|im_end|>", C, True, N), ("\n", X, False, N),
    ]
    tiny = tokenize_conversation(messages, tokenizer)
    assert runs(tokenizer, tiny)[-2:] == [("\n<|assistant|>\n", X, False, N), (" e</s>", C, True, N)]


def test_message_weights_cover_their_message_only(tokenizer):
    messages = [dict(m, weight=w) for m, w in zip(CONVERSATION, [0.0, 0.25, 1, None, 0.75, 0.5])]
    row = tokenize_conversation(messages, tokenizer, chat_template=CHATML)
    weights = {(text, role): weight for text, role, _, weight in runs(tokenizer, row)}
    assert weights == {
        ("<|im_start|>system\n", X): N, ("You are a calculator.", S): 0.0, ("<|im_end|>\n<|im_start|>user\n", X): N,
        ("Add 2 and 3.", P): 0.25, ("<|im_end|>\n<|im_start|>assistant\n", X): N, ("5<|im_end|>", H): 1.0,
        ("\n<|im_start|>tool\n", X): N, ("ok", T): N, ("And 4 and 4?", P): 0.75, ("8<|im_end|>", C): 0.5, ("\n", X): N,
    }


def test_collate_pads_every_key(tokenizer):
    rows = [tokenize_conversation(CONVERSATION, tokenizer), tokenize_conversation(CONVERSATION[:3], tokenizer)]
    batch = collate_conversations(rows, tokenizer.pad_token_id)
    short, width = len(rows[1]["input_ids"]), len(rows[0]["input_ids"])
    assert batch["input_ids"].shape == (2, width) and batch[MESSAGE_WEIGHTS_KEY].dtype == torch.float32
    assert batch["attention_mask"][1].tolist() == [1] * short + [0] * (width - short)
    assert batch["labels"][1, short:].eq(IGNORE_INDEX).all() and batch[ROLES_KEY][1, short:].eq(Role.PROMPT).all()
    assert batch[MESSAGE_WEIGHTS_KEY][1, short:].eq(NO_MESSAGE_WEIGHT).all()
    assert batch[ROLES_KEY][0].tolist() == rows[0][ROLES_KEY]


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, "0.5", True])
def test_a_bad_message_weight_names_row_message_and_value(tokenizer, bad):
    messages = [*CONVERSATION[:5], dict(CONVERSATION[5], weight=bad)]
    with pytest.raises(ValueError, match=rf"row 7, message 5: weight must be a number in \[0, 1\], got {bad!r}"):
        tokenize_conversation(messages, tokenizer, row=7)


def test_a_template_that_drops_a_message_is_an_error(tokenizer):
    no_system = "{% for m in messages %}{% if m['role'] != 'system' %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endif %}{% endfor %}"
    with pytest.raises(ValueError, match=r"row 3, message 0 \(system\): its content is not in the chat template's rendering"):
        tokenize_conversation(CONVERSATION, tokenizer, row=3, chat_template=no_system)


def test_content_given_as_parts(tokenizer):
    """Each text part is placed on its own; a part of another type (an image) is template."""
    template = (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% else %}<img>{% endif %}"
        "{% endfor %}{% endif %}{{ '\\n' }}{% endfor %}"
    )
    parts = [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "user"}]
    messages = [{"role": "user", "content": parts}, {"role": "assistant", "content": "ok"}]
    row = tokenize_conversation(messages, tokenizer, chat_template=template)
    assert runs(tokenizer, row) == [
        ("<|user|>\n", X, False, N), ("a", P, False, N), ("<img>", X, False, N), ("user", P, False, N),
        ("\n<|assistant|>\n", X, False, N), ("ok", C, True, N), ("\n", X, False, N),
    ]


def test_host_tokens_that_are_not_the_renderings_raise_tokens_differ(tokenizer):
    """A host that tokenised the conversation otherwise (turn by turn) is told so, as its own error
    class, so that an adapter can place the roles by its own turn boundaries instead."""
    from plw_plugins.conversations import TokensDifferError, conversation_roles

    messages = [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}]
    row = tokenize_conversation(messages, tokenizer)
    assert conversation_roles(messages, tokenizer, labels=row["labels"], input_ids=row["input_ids"]).roles == row[ROLES_KEY]
    with pytest.raises(TokensDifferError, match=r"row 7: the trainer's .* tokens differ .* at token 1,"):
        conversation_roles(messages, tokenizer, input_ids=row["input_ids"][:1] + [0] + row["input_ids"][2:], row=7)
