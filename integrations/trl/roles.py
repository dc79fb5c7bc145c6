"""Token roles through TRL's data pipeline: role columns on prepared conversational rows, and a
wrapper around TRL's collator that lays them out as it lays out ``input_ids``.

TRL keeps only ``input_ids`` and ``labels`` when it packs and refuses a user collator under
``padding_free``, so ``PLWSFTTrainer`` lets TRL tokenise, adds ``plw_roles`` /
``plw_message_weights`` to each tokenised row here (``plw_plugins.conversations.conversation_roles``
on the same messages, tools and chat template TRL rendered), truncates and packs the rows itself as
TRL does, and wraps TRL's own collator after construction.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from plw_plugins.conversations import conversation_roles, message_weights, templated_text_roles
from plw_plugins.roles import MESSAGE_WEIGHTS_KEY, NO_MESSAGE_WEIGHT, PROMPT_CONTENT_KEY, ROLES_KEY, Role

ROLE_COLUMNS = (ROLES_KEY, MESSAGE_WEIGHTS_KEY)
ROLE_KEYS = ("system_loss_weight", "tool_loss_weight", "template_loss_weight", "history_loss_weight")
"""The keys that need token roles: set, a row whose roles cannot be computed is an error."""
UNAVAILABLE_COLUMN = "_plw_roles_unavailable"
"""Per row, why its roles could not be computed ("" where they were); dropped after the check."""


def conversation_messages(example: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The messages TRL renders for a conversational row: ``messages``, or ``prompt + completion``
    (conversational prompt-completion rows, which TRL renders as one conversation); else None."""
    messages = example.get("messages")
    if isinstance(messages, list):
        return messages
    prompt, completion = example.get("prompt"), example.get("completion")
    if isinstance(prompt, list) and isinstance(completion, list):
        return prompt + completion
    return None


def role_columns(
    example: Mapping[str, Any], index: int, *, tokenizer: Any, chat_template: str | None, strict: bool
) -> dict[str, Any]:
    """``plw_roles`` and ``plw_message_weights`` of one row TRL tokenised, rendered with the chat
    template and keyword arguments TRL rendered it with.

    A bad per-message ``weight`` always raises (naming row, message and value). Where the roles
    cannot be computed (the template rewrites content, a slow tokenizer), a row raises when
    ``strict`` (a role key is set) or when it carries weights; otherwise it gets ``PROMPT`` roles and
    no weights, which leave its loss as it was, and says why in ``UNAVAILABLE_COLUMN``.
    """
    messages = conversation_messages(example)
    if messages is None:  # a text row whose prompt the package's template wrote (``PROMPT_CONTENT_KEY``)
        return _templated_text_columns(example, index, tokenizer=tokenizer, strict=strict)
    weights = message_weights(messages, row=index)
    tools = example.get("tools")
    tools = json.loads(tools) if isinstance(tools, str) else tools
    template_kwargs = {"chat_template": chat_template, "tools": tools, **example.get("chat_template_kwargs", {})}
    try:
        roles = conversation_roles(
            messages, tokenizer, labels=example["labels"], input_ids=example["input_ids"], row=index, **template_kwargs
        )
    except ValueError as error:
        if strict or any(weight is not None for weight in weights):
            why = "a role key is set" if strict else "the row carries per-message weights"
            raise ValueError(f"{error}; token roles are needed because {why}") from None
        length = len(example["input_ids"])
        return {ROLES_KEY: [int(Role.PROMPT)] * length, MESSAGE_WEIGHTS_KEY: [NO_MESSAGE_WEIGHT] * length,
                UNAVAILABLE_COLUMN: str(error) or type(error).__name__}
    return {ROLES_KEY: roles.roles, MESSAGE_WEIGHTS_KEY: roles.message_weights, UNAVAILABLE_COLUMN: ""}


def _templated_text_columns(example: Mapping[str, Any], index: int, *, tokenizer: Any, strict: bool) -> dict[str, Any]:
    """The role columns of a text prompt-completion row (TRL appended the eos to its completion):
    the template's text is ``TEMPLATE``, the data's ``PROMPT``; as ``role_columns`` where they cannot be found."""
    try:
        roles = templated_text_roles(
            example["prompt"], example["completion"], example[PROMPT_CONTENT_KEY], tokenizer,
            input_ids=example["input_ids"], row=index,
        )
    except ValueError as error:
        if strict:
            raise ValueError(f"{error}; token roles are needed because a role key is set") from None
        length = len(example["input_ids"])
        return {ROLES_KEY: [int(Role.PROMPT)] * length, MESSAGE_WEIGHTS_KEY: [NO_MESSAGE_WEIGHT] * length,
                UNAVAILABLE_COLUMN: str(error)}
    return {ROLES_KEY: roles.roles, MESSAGE_WEIGHTS_KEY: roles.message_weights, UNAVAILABLE_COLUMN: ""}


def add_role_columns(
    dataset: Any, *, tokenizer: Any, chat_template: str | None, strict: bool, map_kwargs: dict[str, Any],
    dataset_name: str,
) -> Any:
    """``dataset`` (rows TRL tokenised, with their messages) with the role columns; or, where some
    row's roles cannot be computed and nothing role-specific is in use, unchanged with a warning
    (every row then trains as without roles).

    Errors raised inside ``map`` (possibly in worker processes) are raised again here as one plain
    ``ValueError`` naming the dataset, without the worker's traceback."""
    from datasets import Dataset

    try:
        with_roles = dataset.map(
            role_columns, with_indices=True,
            fn_kwargs={"tokenizer": tokenizer, "chat_template": chat_template, "strict": strict}, **map_kwargs,
        )
    except ValueError as error:
        raise ValueError(f"{dataset_name} dataset: {error}") from None
    if not isinstance(with_roles, Dataset):  # an IterableDataset is mapped lazily: rows are checked as they come
        return with_roles.map(
            _warn_if_unavailable, fn_kwargs={"which": f"some rows of the {dataset_name} dataset"},
            remove_columns=[UNAVAILABLE_COLUMN],
        )
    unavailable = [why for why in with_roles[UNAVAILABLE_COLUMN] if why]
    with_roles = with_roles.remove_columns([UNAVAILABLE_COLUMN])
    if not unavailable:
        return with_roles
    if any(weight >= 0 for row in with_roles[MESSAGE_WEIGHTS_KEY] for weight in row):
        raise ValueError(
            f"{dataset_name} dataset: per-message weights are in use but the token roles of {len(unavailable)} rows "
            f"cannot be computed: {unavailable[0]}"
        )
    warn_roles_unavailable(f"{len(unavailable)} of {len(with_roles)} rows of the {dataset_name} dataset", unavailable[0])
    return dataset


def warn_roles_unavailable(which: str, why: str | None = None) -> None:
    """Warn that some rows train without roles (as before roles existed); Python shows one warning
    of the same text once."""
    because = f" ({why})" if why else ""
    warnings.warn(
        f"token roles cannot be computed for {which}{because}; they train as without roles, and no role "
        "metrics (system_loss...) are logged for them. Role keys and per-message weights would need them",
        stacklevel=2,
    )


def _warn_if_unavailable(example: Mapping[str, Any], which: str) -> dict[str, Any]:
    if example[UNAVAILABLE_COLUMN]:
        warn_roles_unavailable(which)
    return {}


def slice_row(example: Mapping[str, Any], kept: slice) -> dict[str, Any]:
    """A prepared row's token columns (``input_ids``, ``labels`` and the role columns it has) cut to ``kept``."""
    return {key: example[key][kept] for key in ("input_ids", "labels", *ROLE_COLUMNS) if key in example}


@dataclass
class RoleColumnsCollator:
    """TRL's collator, plus ``plw_roles`` and ``plw_message_weights`` laid out exactly as it lays out
    ``input_ids``: each row padded right to the batch's width (which honours ``pad_to_multiple_of``),
    or all rows concatenated into one under ``padding_free``. ``plw_message_weights`` is left out of
    a batch where no token has a weight, so such batches weigh exactly as without roles."""

    collator: Any
    padding_free: bool

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        present = [key for key in ROLE_COLUMNS if key in examples[0]]
        if not present:
            return self.collator(examples)
        batch = self.collator([{k: v for k, v in example.items() if k not in ROLE_COLUMNS} for example in examples])
        ids = batch["input_ids"]
        for key in present:
            dtype, pad_value = (torch.float32, NO_MESSAGE_WEIGHT) if key == MESSAGE_WEIGHTS_KEY else (torch.long, int(Role.PROMPT))
            rows = [torch.as_tensor(example[key], dtype=dtype) for example in examples]
            if key == MESSAGE_WEIGHTS_KEY and not any(bool((row >= 0).any()) for row in rows):
                continue
            if self.padding_free:
                rows = [torch.cat(rows)]
            if len(rows) != ids.shape[0] or any(len(row) > ids.shape[1] for row in rows):
                raise ValueError(
                    f"{key}: the collator's input_ids have shape {tuple(ids.shape)}, which does not hold the rows' "
                    f"{[len(row) for row in rows]} tokens; the roles cannot be laid out as the tokens are"
                )
            batch[key] = torch.stack([F.pad(row, (0, ids.shape[1] - len(row)), value=pad_value) for row in rows])
        return batch
