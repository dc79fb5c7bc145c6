"""Chat conversations as the loss sees them: the role of every token, and per-message weights.

A chat template renders ``messages`` to text and the tokenizer splits that text; the same message's
content may be split differently inside the conversation than alone. So roles are found on the
rendered text, by character offsets: every token goes to the message content it overlaps most,
else it is template scaffolding. Scaffolding the host trains (an assistant turn's end-of-turn token,
a tool call rendered by the template) belongs to the turn that contains it, found by rendering the
conversation's first k messages, which most templates render as a prefix of the whole.

``tokenize_conversation`` builds a training row from scratch (for Lightning and custom loops);
``conversation_roles`` gives the roles of a row the host framework already tokenised, and
``templated_text_roles`` those of a prompt-completion text row whose prompt a text template wrote. Both take any
tokenizer with ``apply_chat_template`` and character offsets (a transformers fast tokenizer).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .masks import IGNORE_INDEX
from .roles import MESSAGE_WEIGHTS_KEY, NO_MESSAGE_WEIGHT, ROLES_KEY, Role, validate_message_weight

ROLE_OF_MESSAGE = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "tool": Role.TOOL,
    "function": Role.TOOL,
    "ipython": Role.TOOL,
}
"""Message roles with a role of their own; ``assistant`` is ``COMPLETION`` (its last message) or
``HISTORY`` (earlier ones), any other (``user``) is ``PROMPT``."""

GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


class TokensDifferError(ValueError):
    """The host's tokens of a row are not the tokens of the chat template's rendering of it (the host
    tokenised turn by turn, or with other settings), so offsets in that rendering cannot place them."""


@dataclass(frozen=True)
class ConversationRoles:
    """One conversation's tokens with their ``Role`` codes and message weights (``NO_MESSAGE_WEIGHT``
    where a token's message has none), all of the same length."""

    input_ids: list[int]
    roles: list[int]
    message_weights: list[float]


def message_weights(messages: Sequence[Mapping[str, Any]], *, row: object = None) -> list[float | None]:
    """Each message's ``weight`` from the data, checked (a ``ValueError`` names the row, the message
    index and the value), ``None`` where it has none."""
    return [
        None if message.get("weight") is None else validate_message_weight(message["weight"], row=row, message=index)
        for index, message in enumerate(messages)
    ]


def conversation_roles(
    messages: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    labels: Sequence[int] | None = None,
    input_ids: Sequence[int] | None = None,
    row: object = None,
    **template_kwargs: Any,
) -> ConversationRoles:
    """The role and message weight of every token of ``messages`` rendered by the tokenizer's chat
    template (``template_kwargs``: ``chat_template``, ``tools``... as ``apply_chat_template`` takes).

    ``labels`` (``IGNORE_INDEX`` where the host does not train) attach trained scaffolding to its turn;
    without them all scaffolding is ``TEMPLATE``. ``input_ids``, the host's tokens for this row, must be
    the rendered text's tokens: a ``ValueError`` says where they differ. ``row`` names the row in errors.
    """
    weights = message_weights(messages, row=row)
    text = _render(tokenizer, messages, template_kwargs)
    ids, offsets = _tokenize_with_offsets(tokenizer, text)
    if input_ids is not None and list(input_ids) != ids:
        at = next((i for i, (a, b) in enumerate(zip(input_ids, ids)) if a != b), min(len(input_ids), len(ids)))
        raise TokensDifferError(
            f"row {row}: the trainer's {len(input_ids)} tokens differ from the chat template's rendering "
            f"({len(ids)} tokens) at token {at}, so roles cannot be assigned to them"
        )
    if labels is not None and len(labels) != len(ids):
        raise ValueError(f"row {row}: {len(labels)} labels for {len(ids)} tokens")
    spans = message_content_spans(tokenizer, text, messages, template_kwargs, row)
    turn_ends = message_turn_ends(tokenizer, messages, text, spans, template_kwargs)
    last_assistant = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)

    def message_role(index: int) -> int:
        if messages[index].get("role") == "assistant":
            return Role.COMPLETION if index == last_assistant else Role.HISTORY
        return ROLE_OF_MESSAGE.get(messages[index].get("role"), Role.PROMPT)

    roles, token_weights = [], []
    for position, (start, end) in enumerate(offsets):
        owner = _owner(start, end, spans)
        if owner is None and labels is not None and labels[position] != IGNORE_INDEX:
            owner = next((k for k, turn_end in enumerate(turn_ends) if start < turn_end), len(messages) - 1)
        roles.append(Role.TEMPLATE if owner is None else message_role(owner))
        weight = None if owner is None else weights[owner]
        token_weights.append(NO_MESSAGE_WEIGHT if weight is None else weight)
    return ConversationRoles(ids, [int(role) for role in roles], token_weights)


def templated_text_roles(
    prompt: str, completion: str, content_spans: Sequence[Sequence[int]], tokenizer: Any, *,
    input_ids: Sequence[int], row: object = None,
) -> ConversationRoles:
    """The roles of a prompt-completion text row whose prompt a text template wrote (the package's
    Alpaca conversion): tokens in ``content_spans`` (character ranges of ``prompt`` the data filled in)
    are ``PROMPT``, the completion's are ``COMPLETION``, the template's text and the special tokens the
    tokenizer adds are ``TEMPLATE``. ``input_ids``, the host's tokens of ``prompt + completion``, must
    be the tokenizer's: a ``ValueError`` says otherwise."""
    text = prompt + completion
    for special in (True, False):  # the host may or may not have added special tokens
        encoded = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
        if list(encoded["input_ids"]) == list(input_ids):
            break
    else:
        raise ValueError(f"row {row}: the trainer's tokens are not the tokenizer's tokens of prompt + completion")
    spans = [[(int(a), int(b)) for a, b in content_spans], [(len(prompt), len(text))]]
    roles = []
    for start, end in encoded["offset_mapping"]:
        owner = _owner(start, end, spans) if end > start else None
        roles.append(Role.TEMPLATE if owner is None else (Role.PROMPT, Role.COMPLETION)[owner])
    return ConversationRoles(list(input_ids), [int(role) for role in roles], [NO_MESSAGE_WEIGHT] * len(roles))


def tokenize_conversation(
    messages: Sequence[Mapping[str, Any]], tokenizer: Any, *, row: object = None, **template_kwargs: Any
) -> dict[str, list]:
    """A training row for ``messages``: ``input_ids``, ``labels`` (every assistant turn trained, the
    rest ``IGNORE_INDEX``), ``plw_roles`` and ``plw_message_weights``.

    Trained tokens are the template's ``{% generation %}`` blocks where it has them (as TRL's
    ``assistant_only_loss`` trains), else each assistant message's content and the end of its turn up
    to the last non-space character before the next turn (``<|im_end|>``, ``<|eot_id|>``).
    """
    text = _render(tokenizer, messages, template_kwargs)
    ids, offsets = _tokenize_with_offsets(tokenizer, text)
    template = template_kwargs.get("chat_template") or getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, str) and GENERATION_MARKER.search(template):
        rendered = tokenizer.apply_chat_template(
            list(messages), tokenize=True, return_dict=True, return_assistant_tokens_mask=True, **template_kwargs
        )
        if list(rendered["input_ids"]) != ids:
            raise ValueError(f"row {row}: the chat template's tokens differ from its rendered text's tokens")
        trained = [bool(bit) for bit in rendered["assistant_masks"]]
    else:
        spans = message_content_spans(tokenizer, text, messages, template_kwargs, row)
        turn_ends = message_turn_ends(tokenizer, messages, text, spans, template_kwargs)
        ranges = []
        for index, message in enumerate(messages):
            if message.get("role") == "assistant" and spans[index]:
                start = spans[index][0][0]
                ranges.append((start, start + len(text[start : turn_ends[index]].rstrip())))
        trained = [any(start < b and a < end for a, b in ranges) for start, end in offsets]
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(ids, trained)]
    roles = conversation_roles(messages, tokenizer, labels=labels, input_ids=ids, row=row, **template_kwargs)
    return {"input_ids": ids, "labels": labels, ROLES_KEY: roles.roles, MESSAGE_WEIGHTS_KEY: roles.message_weights}


def collate_conversations(rows: Sequence[Mapping[str, Sequence]], pad_token_id: int) -> dict[str, Tensor]:
    """Right-pad rows from ``tokenize_conversation`` into a batch: ``input_ids``, ``attention_mask``,
    ``labels`` (``IGNORE_INDEX`` on padding), ``plw_roles`` and ``plw_message_weights``."""
    width = max(len(row["input_ids"]) for row in rows)
    pads = {"input_ids": pad_token_id, "labels": IGNORE_INDEX, ROLES_KEY: int(Role.PROMPT), MESSAGE_WEIGHTS_KEY: NO_MESSAGE_WEIGHT}
    batch = {
        key: torch.tensor([list(row[key]) + [pad] * (width - len(row[key])) for row in rows],
                          dtype=torch.float32 if key == MESSAGE_WEIGHTS_KEY else torch.long)
        for key, pad in pads.items()
    }
    batch["attention_mask"] = torch.tensor([[1] * len(row["input_ids"]) + [0] * (width - len(row["input_ids"])) for row in rows])
    return batch


def _render(tokenizer: Any, messages: Sequence[Mapping[str, Any]], template_kwargs: Mapping[str, Any]) -> str:
    if not (template_kwargs.get("chat_template") or getattr(tokenizer, "chat_template", None)):
        raise ValueError("conversational data needs a tokenizer with a chat template; this one has none")
    return tokenizer.apply_chat_template(list(messages), tokenize=False, **template_kwargs)


def _tokenize_with_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """The rendered text's tokens as ``apply_chat_template`` makes them (no special tokens added), with
    character offsets."""
    if not getattr(tokenizer, "is_fast", True):
        raise ValueError(f"{type(tokenizer).__name__} gives no character offsets; roles need a fast tokenizer")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(pair) for pair in encoded["offset_mapping"]]


def _texts(message: Mapping[str, Any]) -> list[str]:
    """The text pieces of a message's content: a string, or the text parts of a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [part["text"] for part in content if isinstance(part, Mapping) and isinstance(part.get("text"), str)]
    return []


def message_content_spans(
    tokenizer: Any, text: str, messages: Sequence[Mapping[str, Any]], template_kwargs: Mapping[str, Any], row: object,
) -> list[list[tuple[int, int]]]:
    """Per message, where its content lies in ``text``, verbatim or stripped of surrounding whitespace
    (as templates often strip it).

    Each piece is placed where the template puts it: the rendering with ``CONTENT_MARKER`` in its
    place must equal ``text`` up to the marker, and ``text`` must go on with the piece there. A plain
    search would find a short piece ("a", "e", "system") in the scaffolding before it (``<|assistant|>``,
    ``<|im_end|>``, a role header). Where the marked rendering differs (a template that branches on
    the content), the piece is searched for after the previous one.
    """
    spans, cursor = [], 0
    for index, message in enumerate(messages):
        found = []
        for part, piece in enumerate(_texts(message)):
            candidates = [candidate for candidate in dict.fromkeys((piece, piece.strip())) if candidate]
            start, at = _marked_start(tokenizer, text, messages, index, part, template_kwargs), None
            if start is not None and start >= cursor:
                at = next((candidate for candidate in candidates if text.startswith(candidate, start)), None)
            if at is None:
                hits = [(text.find(candidate, cursor), candidate) for candidate in candidates]
                start, at = next(((hit, candidate) for hit, candidate in hits if hit >= 0), (-1, None))
            if at is not None:
                found.append((start, start + len(at)))
                cursor = start + len(at)
            elif piece.strip():
                raise ValueError(
                    f"row {row}, message {index} ({message.get('role')}): its content is not in the chat template's "
                    "rendering, so its tokens cannot be given a role (does the template rewrite or drop it?)"
                )
        spans.append(found)
    return spans


CONTENT_MARKER = "PLWCONTENTMARKER"
"""Stands in for one piece of a message's content to find where the template renders it."""


def _marked_start(
    tokenizer: Any, text: str, messages: Sequence[Mapping[str, Any]], index: int, part: int,
    template_kwargs: Mapping[str, Any],
) -> int | None:
    """Where the template puts text piece ``part`` of message ``index``: the marker's position in the
    rendering with the marker in the piece's place, if that rendering equals ``text`` before it."""
    message = dict(messages[index])
    if isinstance(message.get("content"), str):
        message["content"] = CONTENT_MARKER
    else:
        parts = [dict(p) if isinstance(p, Mapping) else p for p in message["content"]]
        text_parts = [p for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
        text_parts[part]["text"] = CONTENT_MARKER
        message["content"] = parts
    try:
        marked = _render(tokenizer, [*messages[:index], message, *messages[index + 1 :]], template_kwargs)
    except Exception:  # a template may refuse the marker (it validates content); fall back to searching
        return None
    start = marked.find(CONTENT_MARKER)
    return start if start >= 0 and marked[:start] == text[:start] else None


def message_turn_ends(
    tokenizer: Any, messages: Sequence[Mapping[str, Any]], text: str, spans: list[list[tuple[int, int]]],
    template_kwargs: Mapping[str, Any],
) -> list[int]:
    """Where each message's turn ends in ``text``: the length of the rendering of the messages up to
    it where that is a prefix of the whole, else where its content ends (or the previous turn does)."""
    ends, previous = [], 0
    for index in range(len(messages)):
        end = None
        try:
            prefix = _render(tokenizer, messages[: index + 1], template_kwargs)
            if text.startswith(prefix) and len(prefix) >= previous:
                end = len(prefix)
        except Exception:  # a template may refuse a partial conversation; fall back to the content's end
            pass
        if end is None:
            end = max([previous, *(b for _, b in spans[index])])
        ends.append(end)
        previous = end
    ends[-1] = len(text)
    return ends


def _owner(start: int, end: int, spans: list[list[tuple[int, int]]]) -> int | None:
    """The message whose content the token ``[start, end)`` overlaps most, or None (scaffolding)."""
    best, best_overlap = None, 0
    for index, message_spans in enumerate(spans):
        for a, b in message_spans:
            overlap = min(end, b) - max(start, a)
            if overlap > best_overlap:
                best, best_overlap = index, overlap
    return best
