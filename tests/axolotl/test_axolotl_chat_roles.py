"""The roles the plugin adds to Axolotl's own tokenization of ``type: chat_template`` rows, through
Axolotl's real strategy loader: the dataset config's field names, role mapping and system handling
decide which message each token belongs to; where Axolotl's tokens are not the rendered text's, its
own turn boundaries give the same roles."""

from __future__ import annotations

import pytest

from plw_plugins.roles import NO_MESSAGE_WEIGHT, Role

pytestmark = pytest.mark.axolotl

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 plus 3?", "weight": 0.5},
    {"role": "assistant", "content": "Let me check."},
    {"role": "tool", "content": "5"},
    {"role": "assistant", "content": "It is 5."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def strategy(tokenizer, **dataset):
    """Axolotl's strategy for a ``type: chat_template`` dataset, made to add the roles."""
    from axolotl.prompt_strategies.chat_template import load
    from axolotl.utils.dict import DictDefault

    from plw_plugins.integrations.axolotl.chat_roles import tag_roles

    cfg = DictDefault({"chat_template": "tokenizer_default", "sequence_len": 512, "train_on_inputs": False})
    loaded = load(tokenizer, cfg, DictDefault({"type": "chat_template", **dataset}))
    assert tag_roles(loaded)
    return loaded


def roles_by_content(tokenizer, row, messages=MESSAGES) -> dict[str, tuple[int, float]]:
    """Each message content's (role, message weight), read off the row's tokens."""
    found, ids = {}, row["input_ids"]
    for message in messages:
        piece = tokenizer(message["content"], add_special_tokens=False)["input_ids"]
        start = next(i for i in range(len(ids)) if ids[i : i + len(piece)] == piece)
        span = {(row["plw_roles"][i], row["plw_message_weights"][i]) for i in range(start, start + len(piece))}
        (found[message["content"]],) = span
    return found


EXPECTED = {
    "Be brief.": (Role.SYSTEM, NO_MESSAGE_WEIGHT), "What is 2 plus 3?": (Role.PROMPT, 0.5),
    "Let me check.": (Role.HISTORY, NO_MESSAGE_WEIGHT), "5": (Role.TOOL, NO_MESSAGE_WEIGHT),
    "It is 5.": (Role.COMPLETION, NO_MESSAGE_WEIGHT),
}


def test_field_names_and_role_mapping_come_from_the_dataset_config(tokenizer):
    """ShareGPT-style rows (``conversations``, ``from``/``value``, ``human``/``gpt``) mapped as
    Axolotl maps them, in a batch as Axolotl's ``map`` hands it over."""
    names = {"system": "system", "user": "human", "assistant": "gpt", "tool": "tool"}
    rows = [{"from": names[m["role"]], "value": m["content"], **({"weight": m["weight"]} if "weight" in m else {})}
            for m in MESSAGES]
    loaded = strategy(
        tokenizer, field_messages="conversations", message_property_mappings={"role": "from", "content": "value"},
        roles={"user": ["human"], "assistant": ["gpt"], "system": ["system"], "tool": ["tool"]},
    )
    batch = loaded.tokenize_prompt({"conversations": [rows, rows], "__plw_row": [0, 1]})
    assert len(batch["plw_roles"]) == 2
    row = {key: values[1] for key, values in batch.items()}
    assert len(row["plw_roles"]) == len(row["input_ids"]) == len(row["plw_message_weights"])
    assert roles_by_content(tokenizer, row) == EXPECTED


def test_a_system_turn_from_field_system_or_dropped_keeps_the_weights_on_their_messages(tokenizer):
    row = strategy(tokenizer).tokenize_prompt({"messages": [{**m} for m in MESSAGES[1:]], "system": "Be brief."})
    assert roles_by_content(tokenizer, row) == EXPECTED
    dropped = strategy(tokenizer, drop_system_message=True).tokenize_prompt({"messages": [{**m} for m in MESSAGES]})
    assert "Be brief." not in tokenizer.decode(dropped["input_ids"])
    assert roles_by_content(tokenizer, dropped, MESSAGES[1:]) == {
        content: value for content, value in EXPECTED.items() if content != "Be brief."
    }


@pytest.mark.parametrize("dataset", [{}, {"roles_to_train": ["user", "assistant"], "train_on_eos": "all"}])
def test_turn_boundaries_give_the_same_roles_as_the_rendered_text(tokenizer, dataset):
    """The fallback for rows whose tokens are not the rendered text's (Axolotl's ``find_turn``)
    agrees with ``conversation_roles`` where both apply."""
    from plw_plugins.integrations.axolotl.chat_roles import roles_from_turn_boundaries

    loaded = strategy(tokenizer, **dataset)
    row = loaded.tokenize_prompt({"messages": [{**m} for m in MESSAGES]})
    turns = loaded.get_conversation_thread({"messages": MESSAGES})
    weights = [m.get("weight") for m in MESSAGES]
    roles, message_weights = roles_from_turn_boundaries(loaded, turns, weights, None, row["input_ids"], row["labels"])
    assert roles == row["plw_roles"]
    assert message_weights == row["plw_message_weights"]


def test_a_bad_weight_names_row_message_and_value(tokenizer):
    bad = [{**m} for m in MESSAGES]
    bad[3]["weight"] = "high"
    with pytest.raises(ValueError, match="row 7, message 3: weight must be a number in \\[0, 1\\], got 'high'"):
        strategy(tokenizer).tokenize_prompt({"messages": [MESSAGES, bad], "__plw_row": [6, 7]})


def test_a_chat_dataset_prepared_without_the_plugin_stops_the_run():
    """Axolotl's prepared-dataset hash ignores plugins, so a dataset prepared by a stock run would be
    reused without roles: the plugin stops the run, naming the prepared path."""
    from axolotl.utils.dict import DictDefault
    from datasets import Dataset

    from plw_plugins.integrations.axolotl.plugin import check_role_columns

    cfg = DictDefault({"datasets": [{"type": "chat_template"}], "dataset_prepared_path": "last_run_prepared"})
    stale = Dataset.from_dict({"input_ids": [[1, 2]], "labels": [[1, 2]]})
    with pytest.raises(ValueError, match="no plw_roles column: it was prepared without .* last_run_prepared"):
        check_role_columns(cfg, stale, None)
    check_role_columns(cfg, stale.add_column("plw_roles", [[0, 0]]), None)
    check_role_columns(DictDefault({"datasets": [{"type": "alpaca"}]}), stale, None)  # no roles expected
    slow = DictDefault({**cfg, "tokenizer_use_fast": False})
    check_role_columns(slow, stale, None)  # no roles to be had, and no key that needs them
    with pytest.raises(ValueError, match="system_loss_weight: the roles of chat tokens need a fast"):
        check_role_columns(DictDefault({**slow, "system_loss_weight": 0.0}), stale, None)
