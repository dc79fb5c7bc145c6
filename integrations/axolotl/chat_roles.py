"""The role of every token of Axolotl's ``type: chat_template`` rows, added where Axolotl tokenizes them.

Axolotl tokenizes a conversation in its prompt strategy (``ChatTemplateStrategy``) and keeps only
``input_ids``, ``labels`` and ``attention_mask``: the messages, their roles and a message's ``weight``
are gone by the time a batch is collated. So the plugin wraps the strategy's per-row tokenization
(``_tokenize_single_prompt``, which its batched ``tokenize_prompt`` calls for every row) and adds the
columns ``plw_roles`` and ``plw_message_weights``, computed by the core's ``conversation_roles`` from
the conversation exactly as Axolotl renders it: its own turns (``get_conversation_thread``: the
``field_messages``, ``message_property_mappings``, ``roles`` mapping, ``field_system`` and
``drop_system_message`` of the dataset config), its chat template and kwargs, its tools. Where
Axolotl's tokens are not the rendered text's tokens, the roles come from Axolotl's own turn
boundaries (``find_turn``, what it labels ``roles_to_train`` by) instead.

The wrapping happens where Axolotl hands a strategy its dataset
(``axolotl.utils.data.wrappers.wrap_dataset_for_tokenized_prompt``, replaced while the plugin is
registered). There the dataset also gets a column with each row's index, which tokenization drops
with the other raw columns, so that a bad per-message ``weight`` is reported by row, message index
and value, while the dataset is prepared, before training starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from plw_plugins.conversations import ROLE_OF_MESSAGE, TokensDifferError, conversation_roles, message_weights
from plw_plugins.masks import IGNORE_INDEX
from plw_plugins.roles import MESSAGE_WEIGHTS_KEY, NO_MESSAGE_WEIGHT, ROLES_KEY, Role

ROW_COLUMN = "__plw_row"
"""The raw-dataset column holding each row's index while it is tokenized."""


class ChatRoles:
    """Stands in for one strategy's ``_tokenize_single_prompt``: Axolotl's own tokenization of a row,
    plus ``plw_roles`` and ``plw_message_weights``."""

    def __init__(self, strategy: Any) -> None:
        self.strategy = strategy

    def __call__(self, prompt: dict[str, Any]) -> dict[str, Any]:
        prompt = dict(prompt)
        row = prompt.pop(ROW_COLUMN, None)
        strategy = self.strategy
        weights = message_weights(strategy._get_messages(prompt), row=row)  # checked before any work
        result = type(strategy)._tokenize_single_prompt(strategy, prompt)
        turns = strategy.get_conversation_thread(prompt)
        turn_weights = _weights_of_turns(weights, len(turns))
        weighted = [turn if weight is None else {**turn, "weight": weight} for turn, weight in zip(turns, turn_weights)]
        tools = strategy._get_tools(prompt)
        template_kwargs = {"chat_template": strategy.prompter.chat_template, **strategy.prompter.chat_template_kwargs}
        if tools:
            template_kwargs["tools"] = tools
        input_ids, labels = list(result["input_ids"]), list(result["labels"])
        try:
            roles = conversation_roles(weighted, strategy.tokenizer, labels=labels, input_ids=input_ids, row=row,
                                       **template_kwargs)
            result[ROLES_KEY], result[MESSAGE_WEIGHTS_KEY] = roles.roles, roles.message_weights
        except TokensDifferError:
            result[ROLES_KEY], result[MESSAGE_WEIGHTS_KEY] = roles_from_turn_boundaries(
                strategy, turns, turn_weights, tools, input_ids, labels
            )
        return result


def _weights_of_turns(weights: Sequence[float | None], turns: int) -> list[float | None]:
    """The data's message weights on Axolotl's turns, which may have gained a system turn in front
    (``field_system``) or lost the first message (``drop_system_message``)."""
    offset = turns - len(weights)
    return [weights[index - offset] if 0 <= index - offset < len(weights) else None for index in range(turns)]


def roles_from_turn_boundaries(
    strategy: Any, turns: Sequence[Mapping[str, Any]], weights: Sequence[float | None], tools: Any,
    input_ids: Sequence[int], labels: Sequence[int],
) -> tuple[list[int], list[float]]:
    """Roles from the token span of each turn's content as Axolotl finds it (``find_turn``), for rows
    whose tokens are not the rendered text's: tokens outside every span are template scaffolding,
    except trained ones, which belong to the turn before them (an assistant's end of turn)."""
    count = len(input_ids)
    roles, token_weights = [int(Role.TEMPLATE)] * count, [NO_MESSAGE_WEIGHT] * count
    last_assistant = max((index for index, turn in enumerate(turns) if turn.get("role") == "assistant"), default=-1)
    starts = []
    for index, turn in enumerate(turns):
        if turn.get("role") == "assistant":
            role = Role.COMPLETION if index == last_assistant else Role.HISTORY
        else:
            role = ROLE_OF_MESSAGE.get(turn.get("role"), Role.PROMPT)
        start, end = strategy.find_turn(turns=list(turns), turn_idx=index, tools=tools)
        if start < 0:
            continue
        starts.append((start, index, int(role)))
        weight = NO_MESSAGE_WEIGHT if weights[index] is None else weights[index]
        for position in range(start, min(end, count)):
            roles[position], token_weights[position] = int(role), weight
    for position in range(count):
        if roles[position] == Role.TEMPLATE and labels[position] != IGNORE_INDEX:
            owner = [(index, role) for start, index, role in starts if start <= position]
            if owner:
                index, roles[position] = owner[-1]
                weight = weights[index]
                token_weights[position] = NO_MESSAGE_WEIGHT if weight is None else weight
    return roles, token_weights


def add_row_indices(dataset: Any) -> Any:
    """The dataset with each row's index in ``ROW_COLUMN`` (a streamed dataset is left as it is)."""
    from datasets import Dataset

    if isinstance(dataset, Dataset) and ROW_COLUMN not in dataset.column_names:
        return dataset.add_column(ROW_COLUMN, list(range(len(dataset))))
    return dataset


def tag_roles(strategy: Any) -> bool:
    """Make ``strategy`` add the role columns to every row it tokenizes, if it is a chat template
    strategy rendering text with a fast tokenizer (a multimodal processor's image tokens have no text
    to find roles in; slow and mistral-common tokenizers give no character offsets)."""
    from axolotl.prompt_strategies.chat_template import ChatTemplateStrategy

    if not isinstance(strategy, ChatTemplateStrategy) or strategy.prompter.processor is not None:
        return False
    if not getattr(strategy.tokenizer, "is_fast", False):
        return False
    if not isinstance(vars(strategy).get("_tokenize_single_prompt"), ChatRoles):
        strategy._tokenize_single_prompt = ChatRoles(strategy)
    return True


_ORIGINAL_WRAP: list[Any] = []


def _wrap_dataset_with_roles(prompt_tokenizer: Any, dataset: Any, **kwargs: Any) -> Any:
    if tag_roles(prompt_tokenizer):
        dataset = add_row_indices(dataset)
    return _ORIGINAL_WRAP[0](prompt_tokenizer, dataset, **kwargs)


def install() -> None:
    """Route Axolotl's tokenization of every dataset through ``tag_roles`` (idempotent)."""
    from axolotl.utils.data import wrappers

    if not _ORIGINAL_WRAP:
        _ORIGINAL_WRAP.append(wrappers.wrap_dataset_for_tokenized_prompt)
        wrappers.wrap_dataset_for_tokenized_prompt = _wrap_dataset_with_roles


def uninstall() -> None:
    """Undo ``install``."""
    from axolotl.utils.data import wrappers

    if _ORIGINAL_WRAP:
        wrappers.wrap_dataset_for_tokenized_prompt = _ORIGINAL_WRAP.pop()
