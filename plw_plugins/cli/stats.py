"""``plw-plugins stats``: how long a dataset's prompts and completions are, as the prompt loss weight
study measures them and as the trainer trains them, and whether the prompt loss weight matters for it.

Two counts, because they answer two questions:

- **Content** (the study's generation ratio R_g): each field the data wrote is tokenised alone, with
  no special tokens, template or separator. Alpaca: ``output`` over ``instruction`` + ``input``;
  prompt-completion text: completion over prompt as written; conversations: the final assistant
  turn over every message before it. R_g is the ratio of the means (sum over sum).
- **Trained** (what the loss shares at each weight depend on): the tokens TRL's ``SFTTrainer``
  builds, template and special tokens included. Text: the prompt alone, then prompt + completion
  + eos; conversations: the chat template with and without the generation prompt. The completion
  starts where the two token sequences first differ.

Each trained token is attributed to the field whose characters it covers most (character offsets in
the rendered text), or to the template when it covers none, so that template and per-role counts
add up exactly to what the trainer tokenises.

- **Roles and loss shares**: every token's ``Role`` as the core defines it (``conversation_roles``:
  system, user, tool, template scaffolding, earlier assistant turns, the final one; trained
  scaffolding such as an assistant turn's end-of-turn token belongs to that turn), conversations
  trained as ``SFTTrainer`` trains them with ``assistant_only_loss`` (every assistant turn). Text rows
  are ``prompt`` and ``completion``, and the package's Alpaca template is ``template``. The share of
  the loss each role takes at the weights of the command line follows the core's rule
  (``loss_shares``). Counting is batched; a test checks it against the core's per-row helper token
  by token.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field, fields, is_dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from plw_plugins.config import DEFAULT_PROMPT_LOSS_WEIGHT, HELP
from plw_plugins.conversations import (
    GENERATION_MARKER,
    ROLE_OF_MESSAGE,
    message_content_spans,
    message_turn_ends,
    message_weights,
)
from plw_plugins.roles import NO_MESSAGE_WEIGHT, LossWeights, Role

from .advice import CITATION, advice, role_share_advice
from .datasets import FORMATS, DataError, PromptCompletionRows, read_records, template_argument, to_prompt_completion
from .errors import fail
from .loss_shares import WEIGHT_KEYS, RoleShare, loss_shares, loss_weights_from_keys

RATIO = {"digits": 3}  # ratios print as 0.216 and shares as 82.2%: --json rounds them alike
LENGTH = {"digits": 1}  # token lengths per row print as 298.8
ROLE_KEYS = {
    Role.SYSTEM: "system",
    Role.PROMPT: "user",
    Role.TOOL: "tool",
    Role.HISTORY: "history",
    Role.COMPLETION: "completion",
    Role.TEMPLATE: "template",
}
"""The ``role_tokens`` key of each role in conversations (the core's ``Role``: user turns are ``PROMPT``)."""
ROLES = tuple(ROLE_KEYS.values())


@dataclass
class LengthSummary:
    """Token lengths of one part of the rows (prompt or completion)."""

    mean: float = field(metadata=LENGTH)
    p50: float = field(metadata=LENGTH)
    p90: float = field(metadata=LENGTH)
    p99: float = field(metadata=LENGTH)
    max: int


@dataclass
class TrainedTokens:
    """Per-row token counts as the trainer tokenises the rows, and the conversations' totals by role."""

    prompt_lengths: list[int]
    completion_lengths: list[int]
    template_prompt_lengths: list[int]
    role_tokens: dict[str, int] | None
    unlocated_messages: int = 0
    target_classes: Counter = field(default_factory=Counter)


@dataclass
class DatasetStats:
    """Token statistics of a dataset, as ``plw-plugins stats --json`` prints them (less the raw lengths).

    ``prompt_*`` and ``completion_*`` count content, the study's way; ``trained_*`` and ``template_*``
    count what the trainer trains; ``loss_shares`` is each role's share of the loss at ``loss_weights``."""

    format: str
    rows: int
    skipped_rows: int
    skipped_reasons: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    prompt_length: LengthSummary
    completion_length: LengthSummary
    generation_ratio: float = field(metadata=RATIO)
    generation_ratio_mean_of_rows: float = field(metadata=RATIO)
    short_completion_row_share: float = field(metadata=RATIO)
    trained_prompt_tokens: int
    trained_completion_tokens: int
    trained_prompt_length: LengthSummary
    trained_completion_length: LengthSummary
    template_tokens: int
    template_tokens_per_row: float = field(metadata=LENGTH)
    template_prompt_share: float = field(metadata=RATIO)
    trained_generation_ratio: float = field(metadata=RATIO)
    trained_prompt_token_share: float = field(metadata=RATIO)
    role_tokens: dict[str, int] | None
    unlocated_messages: int
    loss_weights: dict[str, float | None]
    loss_shares: dict[str, RoleShare]
    prompt_lengths: list[int] = field(repr=False)
    completion_lengths: list[int] = field(repr=False)
    trained_prompt_lengths: list[int] = field(repr=False)

    @property
    def short_completion(self) -> bool:
        return self.generation_ratio < 1.0

    def advice(self) -> list[str]:
        return advice(
            self.generation_ratio,
            self.generation_ratio_mean_of_rows,
            self.trained_prompt_tokens,
            self.trained_completion_tokens,
            self.short_completion_row_share,
            template_prompt_share=self.template_prompt_share,
            template_tokens_per_row=self.template_tokens_per_row,
            role_paragraphs=role_share_advice(
                {role: share.share for role, share in self.loss_shares.items()},
                describe_weights(self.weights),
                conversational=self.role_tokens is not None,
            ),
        )

    @property
    def weights(self) -> LossWeights:
        """The weights the loss shares are computed at."""
        return LossWeights(**self.loss_weights)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: every number rounded to the digits the text report shows."""
        data = _rounded(self)
        for name in ("prompt_lengths", "completion_lengths", "trained_prompt_lengths"):
            del data[name]
        data["short_completion"] = self.short_completion
        data["advice"] = self.advice()
        data["citation"] = CITATION
        return data


def _rounded(value: Any, digits: int | None = None) -> Any:
    """A dataclass as a dict, its floats rounded by their fields' ``digits``; infinity as ``None``."""
    if is_dataclass(value):
        return {f.name: _rounded(getattr(value, f.name), f.metadata.get("digits")) for f in fields(value)}
    if isinstance(value, dict):
        return {key: _rounded(item, digits) for key, item in value.items()}
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, digits) if digits is not None else value
    return value


def percentile(values: list[int], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linearly interpolated between order statistics."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: list[int]) -> LengthSummary:
    return LengthSummary(
        mean=sum(values) / len(values),
        p50=percentile(values, 50),
        p90=percentile(values, 90),
        p99=percentile(values, 99),
        max=max(values),
    )


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def _content_texts(row: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The texts the data wrote, prompt side and completion side: no template, no role headers."""
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list):
        return [m["content"] for m in prompt], [m["content"] for m in completion]
    spans = getattr(row, "content_spans", None)
    return ([prompt[a:b] for a, b in spans] if spans is not None else [prompt]), [completion]


def content_lengths(rows: list[dict[str, Any]], tokenizer: Any) -> tuple[list[int], list[int]]:
    """Prompt and completion content tokens per row, the study's count: each field tokenised alone,
    without special tokens (see the module docstring); one batched tokenizer call."""
    texts: list[str] = []
    bounds = []
    for row in rows:
        prompt_texts, completion_texts = _content_texts(row)
        bounds.append((len(texts), len(texts) + len(prompt_texts), len(texts) + len(prompt_texts) + len(completion_texts)))
        texts += prompt_texts + completion_texts
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    return [sum(lengths[a:b]) for a, b, _ in bounds], [sum(lengths[b:c]) for _, b, c in bounds]


def _locate(text: str, pieces: list[tuple[Any, str]]) -> tuple[list[tuple[int, int, Any]], int]:
    """Where each ``(label, content)`` lies in ``text``, searched in order: ``(start, end, label)``
    spans and the number of contents not found verbatim (nor stripped of surrounding whitespace)."""
    spans, cursor, missing = [], 0, 0
    for label, content in pieces:
        for candidate in (content, content.strip()):
            start = text.find(candidate, cursor) if candidate else -1
            if start >= 0:
                spans.append((start, start + len(candidate), label))
                cursor = start + len(candidate)
                break
        else:
            missing += bool(content.strip())
    return spans, missing


def _labels(tokens: Any, spans: list[tuple[int, int, Any]]) -> Any:
    """Each token's span, from its ``(start, end)`` character offsets (an n x 2 array): the index of
    the span it overlaps most, ``len(spans)`` (the template) where it overlaps none: scaffolding, and
    special tokens added outside the text."""
    import numpy as np

    bounds = np.asarray([(start, end) for start, end, _ in spans], dtype=np.int64).reshape(-1, 2)
    overlap = np.minimum(tokens[:, 1:], bounds[:, 1]) - np.maximum(tokens[:, :1], bounds[:, 0])
    overlap = np.concatenate([overlap, np.zeros((len(tokens), 1), dtype=np.int64)], axis=1)  # the template column
    return np.where(overlap.max(axis=1) > 0, overlap.argmax(axis=1), len(spans))


def _offsets(offset_mapping: list) -> Any:
    """Token offsets of several rows as one n x 2 array (built at once, not row by row)."""
    import numpy as np

    flat = chain.from_iterable(chain.from_iterable(offset_mapping))
    return np.fromiter(flat, dtype=np.int64).reshape(-1, 2)


def _text_layout(row: dict[str, Any], eos: str) -> tuple[str, str, list[tuple[int, int, str]]]:
    """A text row as the trainer writes it: prompt, then prompt + completion + eos; the prompt's
    content is all of it, or the ranges a template filled in."""
    prompt, completion = row["prompt"], row["completion"]
    content = getattr(row, "content_spans", None)
    spans = [(a, b, "prompt") for a, b in (content if content is not None else [(0, len(prompt))])]
    spans.append((len(prompt), len(prompt) + len(completion), "completion"))
    return prompt, prompt + completion + ("" if completion.endswith(eos) else eos), spans


@dataclass
class ConversationTokens:
    """One conversation as ``SFTTrainer`` trains it with ``assistant_only_loss``: its tokens, which are
    trained, and per token its ``Role`` code and message weight (``NO_MESSAGE_WEIGHT`` where none), as
    the core's ``tokenize_conversation`` gives them; ``scaffolding`` marks the tokens in no message's
    content (template and special tokens, before trained ones join their turn)."""

    input_ids: list[int]
    trained: Any
    roles: Any
    message_weights: Any
    scaffolding: Any


def conversation_tokens(conversations: list[list[dict[str, Any]]], tokenizer: Any) -> tuple[list[ConversationTokens], int]:
    """Every conversation's tokens, trained mask, roles and message weights, identical to the core's
    ``tokenize_conversation`` (which the tests check) but batched: one chat-template rendering and one
    tokenizer call for all of them, the roles found with arrays. Also how many message contents do not
    appear in the rendering (their tokens count as template, where the core would raise)."""
    import numpy as np

    if not getattr(tokenizer, "chat_template", None):
        raise DataError("conversational data needs a tokenizer with a chat template; this one has none")
    markers = isinstance(tokenizer.chat_template, str) and bool(GENERATION_MARKER.search(tokenizer.chat_template))
    texts = tokenizer.apply_chat_template(conversations, tokenize=False)
    encoded = tokenizer.apply_chat_template(
        conversations, tokenize=True, return_dict=True, return_assistant_tokens_mask=markers,
        tokenizer_kwargs={"return_offsets_mapping": True},
    )
    offsets = _offsets(encoded["offset_mapping"])
    result, unlocated, end = [], 0, 0
    for row, (messages, text, ids) in enumerate(zip(conversations, texts, encoded["input_ids"])):
        try:
            weights = message_weights(messages, row=row)
        except ValueError as error:
            raise DataError(str(error)) from None
        tokens, end = offsets[end : end + len(ids)], end + len(ids)
        try:  # where the core places each message's content
            located = message_content_spans(tokenizer, text, messages, {}, row)
            spans = [(a, b, index) for index, found in enumerate(located) for a, b in found]
        except ValueError:  # a content the template drops or rewrites: counted, its tokens left to the template
            spans, missing = _locate(text, [(index, message["content"]) for index, message in enumerate(messages)])
            unlocated += missing
        owner = np.asarray([index for _, _, index in spans] + [-1])[_labels(tokens, spans)]
        scaffolding = owner < 0
        turn_ends = None
        if markers:
            trained = np.asarray(encoded["assistant_masks"][row], dtype=bool)
        else:  # as the core trains a template without {% generation %}: content and end of turn
            turn_ends = _conversation_turn_ends(tokenizer, messages, text, spans)
            trained = np.zeros(len(ids), dtype=bool)
            for index, message in enumerate(messages):
                start = next((a for a, _, label in spans if label == index), None)
                if message["role"] == "assistant" and start is not None:
                    stop = start + len(text[start : turn_ends[index]].rstrip())
                    trained |= (tokens[:, 0] < stop) & (start < tokens[:, 1])
        joins = scaffolding & trained  # trained scaffolding belongs to the turn that contains it
        if joins.any():
            turn_ends = turn_ends or _conversation_turn_ends(tokenizer, messages, text, spans)
            turn = np.searchsorted(np.asarray(turn_ends), tokens[joins, 0], side="right")
            owner[joins] = np.minimum(turn, len(messages) - 1)
        last = max((index for index, message in enumerate(messages) if message["role"] == "assistant"), default=-1)
        message_roles = [
            Role.COMPLETION if index == last else Role.HISTORY if message["role"] == "assistant"
            else ROLE_OF_MESSAGE.get(message["role"], Role.PROMPT)
            for index, message in enumerate(messages)
        ]
        by_message = np.asarray([*message_roles, Role.TEMPLATE], dtype=np.int64)
        weight_of = np.asarray([NO_MESSAGE_WEIGHT if w is None else w for w in weights] + [NO_MESSAGE_WEIGHT])
        result.append(ConversationTokens(list(ids), trained, by_message[owner], weight_of[owner], scaffolding))
    return result, unlocated


def _conversation_turn_ends(tokenizer: Any, messages: list[dict[str, Any]], text: str, spans: list[tuple[int, int, int]]) -> list[int]:
    """Where each message's turn ends in ``text``, as the core finds it."""
    per_message = [[(a, b) for a, b, label in spans if label == index] for index in range(len(messages))]
    return message_turn_ends(tokenizer, messages, text, per_message, {})


def _count_targets(counts: Counter, roles: Any, trained: Any, weights: Any) -> None:
    """Add one row's next-token targets (every token but the first) to ``counts`` by ``TargetClass``."""
    import numpy as np

    roles, trained, weights = roles[1:], trained[1:], weights[1:]
    if (weights == NO_MESSAGE_WEIGHT).all():
        for code, count in enumerate(np.bincount(2 * roles + trained, minlength=2 * len(Role)).tolist()):
            if count:
                counts[code // 2, bool(code % 2), NO_MESSAGE_WEIGHT] += count
        return
    keys, tally = np.unique(np.stack([2 * roles + trained, weights]), axis=1, return_counts=True)
    for (code, weight), count in zip(keys.T.tolist(), tally.tolist()):
        counts[int(code) // 2, bool(int(code) % 2), weight] += count


def _split(result: TrainedTokens, i: int, prompt_ids: list[int], ids: list[int], scaffolding: Any) -> int:
    """Record row ``i``'s prompt, completion and prompt-template lengths; return the prompt length:
    the completion starts where the prompt's tokens and the whole row's first differ."""
    n = _common_prefix_length(prompt_ids, ids)
    result.prompt_lengths[i], result.completion_lengths[i] = n, len(ids) - n
    result.template_prompt_lengths[i] = int(scaffolding[:n].sum())
    return n


def trained_tokens(rows: list[dict[str, Any]], tokenizer: Any) -> TrainedTokens:
    """Prompt and completion token counts of prompt-completion rows as ``SFTTrainer`` tokenises them
    (text prompts with the tokenizer's own special tokens and an eos appended to the completion;
    message lists through the chat template), the template tokens of each prompt, the conversations'
    tokens by role, and every row's next-token targets by ``TargetClass``. Batched."""
    import numpy as np

    chat_index = [i for i, row in enumerate(rows) if isinstance(row["prompt"], list)]
    text_index = [i for i, row in enumerate(rows) if not isinstance(row["prompt"], list)]
    count = len(rows)
    result = TrainedTokens([0] * count, [0] * count, [0] * count, dict.fromkeys(ROLES, 0) if chat_index else None)
    if text_index:
        layouts = [_text_layout(rows[i], tokenizer.eos_token or "") for i in text_index]
        prompt_ids = tokenizer([prompt for prompt, _, _ in layouts], add_special_tokens=True)["input_ids"]
        full = tokenizer([text for _, text, _ in layouts], add_special_tokens=True, return_offsets_mapping=True)
        offsets = _offsets(full["offset_mapping"])
        end = 0
        for i, (_, _, spans), p, ids in zip(text_index, layouts, prompt_ids, full["input_ids"]):
            labels, end = _labels(offsets[end : end + len(ids)], spans), end + len(ids)
            scaffolding = labels == len(spans)
            n = _split(result, i, p, ids, scaffolding)
            # the prompt is one role; where the package wrote a template around the data, its text is template
            templated = getattr(rows[i], "content_spans", None) is not None
            roles = np.where(scaffolding & templated, Role.TEMPLATE, Role.PROMPT)
            trained = np.arange(len(ids)) >= n
            roles[trained] = Role.COMPLETION
            _count_targets(result.target_classes, roles, trained, np.full(len(ids), NO_MESSAGE_WEIGHT))
    if chat_index:
        conversations, result.unlocated_messages = conversation_tokens(
            [rows[i]["prompt"] + rows[i]["completion"] for i in chat_index], tokenizer
        )
        prompts = tokenizer.apply_chat_template([rows[i]["prompt"] for i in chat_index], add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]  # the chat template writes its own special tokens
        for i, p, conversation in zip(chat_index, prompt_ids, conversations):
            _split(result, i, p, conversation.input_ids, conversation.scaffolding)
            _count_targets(result.target_classes, conversation.roles, conversation.trained, conversation.message_weights)
            for role, tokens in enumerate(np.bincount(conversation.roles, minlength=len(Role)).tolist()):
                result.role_tokens[ROLE_KEYS[Role(role)]] += tokens
    return result


def compute_stats(data: PromptCompletionRows, tokenizer: Any, weights: LossWeights | None = None) -> DatasetStats:
    """The statistics of already converted rows, the loss shares at ``weights`` (default: the package's
    prompt loss weight, every other key unset); raises :class:`DataError` when no row is usable."""
    weights = weights or loss_weights_from_keys({})
    if not data.rows:
        reasons = ", ".join(f"{count} {reason}" for reason, count in data.skipped.most_common()) or "no records"
        raise DataError(f"no usable rows in the {data.format} data ({reasons})")
    prompt_lengths, completion_lengths = content_lengths(data.rows, tokenizer)
    trained = trained_tokens(data.rows, tokenizer)
    prompt_tokens, completion_tokens = sum(prompt_lengths), sum(completion_lengths)
    trained_prompt, trained_completion = sum(trained.prompt_lengths), sum(trained.completion_lengths)
    template = sum(trained.template_prompt_lengths)
    ratios = [c / p for p, c in zip(prompt_lengths, completion_lengths) if p > 0]
    rows = len(data.rows)
    return DatasetStats(
        format=data.format,
        rows=rows,
        skipped_rows=data.skipped_rows,
        skipped_reasons=dict(data.skipped.most_common()),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        prompt_length=summarize(prompt_lengths),
        completion_length=summarize(completion_lengths),
        generation_ratio=completion_tokens / prompt_tokens if prompt_tokens else float("inf"),
        generation_ratio_mean_of_rows=sum(ratios) / len(ratios) if ratios else float("inf"),
        short_completion_row_share=sum(c < p for p, c in zip(prompt_lengths, completion_lengths)) / rows,
        trained_prompt_tokens=trained_prompt,
        trained_completion_tokens=trained_completion,
        trained_prompt_length=summarize(trained.prompt_lengths),
        trained_completion_length=summarize(trained.completion_lengths),
        template_tokens=template,
        template_tokens_per_row=template / rows,
        template_prompt_share=template / trained_prompt if trained_prompt else 0.0,
        trained_generation_ratio=trained_completion / trained_prompt if trained_prompt else float("inf"),
        trained_prompt_token_share=trained_prompt / (trained_prompt + trained_completion),
        role_tokens=trained.role_tokens,
        unlocated_messages=trained.unlocated_messages,
        loss_weights={name: getattr(weights, name) for name in WEIGHT_KEYS.values()},
        loss_shares=loss_shares(trained.target_classes, weights),
        prompt_lengths=prompt_lengths,
        completion_lengths=completion_lengths,
        trained_prompt_lengths=trained.prompt_lengths,
    )


def load_tokenizer(name_or_path: str) -> Any:
    """A tokenizer by local path or hub name; :class:`DataError` when it cannot be loaded."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot load tokenizer {name_or_path!r}: {error}") from error


def dataset_stats(
    path: str | Path,
    tokenizer: Any,
    *,
    data_format: str | None = None,
    template: str | None = None,
    split: str | None = None,
    weights: LossWeights | None = None,
) -> DatasetStats:
    """Statistics of the dataset at ``path`` (JSON, JSON Lines or a saved dataset folder), with the
    loss shares by role at ``weights``.

    ``tokenizer`` is a tokenizer object or a path or hub name to load one from.
    """
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    records = read_records(path, split=split)
    return compute_stats(to_prompt_completion(records, data_format, template=template), tokenizer, weights)


ROLE_NAMES = {
    "system": "system",
    "user": "user",
    "tool": "tool",
    "history": "earlier assistant turns",
    "completion": "final assistant turn",
    "template": "template and special tokens",
}


def _length_rows(prompt: LengthSummary, completion: LengthSummary, totals: tuple[int, int]) -> list[str]:
    lines = [f"{'  total':<34}{totals[0]:>12,}{totals[1]:>12,}"]
    for key in ("mean", "p50", "p90", "p99", "max"):
        lines.append(f"{'  ' + key + ' per row':<34}{getattr(prompt, key):>12,.1f}{getattr(completion, key):>12,.1f}")
    return lines


def format_report(stats: DatasetStats, source: str = "") -> str:
    """The human-readable report: content and trained lengths, ratios, tokens by role, then the advice."""
    skipped = f"{stats.skipped_rows:,} skipped"
    if stats.skipped_reasons:
        skipped += " (" + "; ".join(f"{count:,} {reason}" for reason, count in stats.skipped_reasons.items()) + ")"
    lines = [
        f"{source} ({stats.format} format)" if source else f"{stats.format} format",
        f"rows: {stats.rows:,} used, {skipped}",
        "",
        f"{'tokens':<34}{'prompt':>12}{'completion':>12}",
        "content (the data's own text)",
        *_length_rows(stats.prompt_length, stats.completion_length, (stats.prompt_tokens, stats.completion_tokens)),
        "trained (template and special tokens in)",
        *_length_rows(
            stats.trained_prompt_length,
            stats.trained_completion_length,
            (stats.trained_prompt_tokens, stats.trained_completion_tokens),
        ),
        f"{'  template per row':<34}{stats.template_tokens_per_row:>12,.1f}",
        "",
        f"generation ratio R_g (content, the study's definition): {stats.generation_ratio:.3f}",
        f"mean of per-row content ratios:                          {stats.generation_ratio_mean_of_rows:.3f}",
        f"rows with a shorter completion than prompt (content):    {100 * stats.short_completion_row_share:.1f}%",
        f"trained generation ratio (as the trainer sees it):       {stats.trained_generation_ratio:.3f}",
        f"template share of the trained prompt:                    {100 * stats.template_prompt_share:.1f}%",
        f"share of trained tokens that are prompt:                 {100 * stats.trained_prompt_token_share:.1f}%",
        "",
    ]
    if stats.role_tokens is not None:
        total = sum(stats.role_tokens.values())
        lines.append(f"{'conversation tokens by role':<34}{'total':>12}{'per row':>12}{'share':>9}")
        for role, tokens in stats.role_tokens.items():
            lines.append(f"{'  ' + ROLE_NAMES[role]:<34}{tokens:>12,}{tokens / stats.rows:>12,.1f}{100 * tokens / total:>8.1f}%")
        lines += [f"{'  all, as trained':<34}{total:>12,}{total / stats.rows:>12,.1f}{100.0:>8.1f}%", ""]
        if stats.unlocated_messages:
            lines += [
                f"{stats.unlocated_messages:,} message contents do not appear verbatim in the chat template's text; "
                "their tokens are counted as template.",
                "",
            ]
    lines += _share_rows(stats)
    lines += [paragraph + "\n" for paragraph in stats.advice()]
    return "\n".join(lines).rstrip() + "\n"


SHARE_NAMES = {
    "system": "system prompt",
    "prompt": "prompt",
    "tool": "tool results",
    "template": "template and special tokens",
    "history": "earlier assistant turns",
    "completion": "completion",
}
CHAT_SHARE_NAMES = {**SHARE_NAMES, "prompt": "user turns", "completion": "final assistant turn"}


def describe_weights(weights: LossWeights) -> str:
    """``prompt_loss_weight 0.1`` and every other key set away from its default, as the user wrote them."""
    defaults = LossWeights(prompt=weights.prompt)
    return ", ".join(
        f"{key} {getattr(weights, name):g}"
        for key, name in WEIGHT_KEYS.items()
        if name == "prompt" or getattr(weights, name) != getattr(defaults, name)
    )


def _share_rows(stats: DatasetStats) -> list[str]:
    """The loss share table: each role's next-token targets, their weight and share of the loss."""
    conversational = stats.role_tokens is not None
    names = CHAT_SHARE_NAMES if conversational else SHARE_NAMES
    trained = "every assistant turn trained, as with assistant_only_loss" if conversational else "the completion trained"
    lines = [
        f"loss share by role at {describe_weights(stats.weights)} ({trained})",
        f"{'':<34}{'targets':>12}{'weight':>12}{'share':>9}",
    ]
    for role, share in stats.loss_shares.items():
        lines.append(f"{'  ' + names[role]:<34}{share.targets:>12,}{share.weight:>12.3f}{100 * share.share:>8.1f}%")
    return lines + [""]


def plot_lengths(stats: DatasetStats, path: str | Path, title: str = "") -> None:
    """Write a PNG with the prompt and completion length histograms side by side (content, and the
    trained prompt with its template); makes the folder; :class:`ImportError` without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    parts = (
        ("prompt", stats.prompt_lengths, stats.prompt_length, "tab:blue"),
        ("completion", stats.completion_lengths, stats.completion_length, "tab:orange"),
    )
    for axis, (name, lengths, summary, color) in zip(axes, parts):
        bins = min(60, max(10, len(set(lengths))))
        axis.hist(lengths, bins=bins, color=color, alpha=0.85, label="content")
        axis.axvline(summary.mean, color="black", linestyle="--", linewidth=1, label=f"mean {summary.mean:.1f}")
        axis.axvline(summary.p90, color="gray", linestyle=":", linewidth=1, label=f"p90 {summary.p90:.0f}")
        axis.set_title(f"{name} length (content tokens)")
        axis.set_xlabel("tokens per row")
    axes[0].hist(stats.trained_prompt_lengths, bins=min(60, max(10, len(set(stats.trained_prompt_lengths)))),
                 histtype="step", color="tab:gray", label="trained (with template)")
    for axis in axes:
        axis.legend()
    axes[0].set_ylabel("rows")
    regime = "short-completion" if stats.short_completion else "long-completion"
    figure.suptitle(
        f"{title + ': ' if title else ''}{stats.rows:,} rows, R_g = {stats.generation_ratio:.2f} ({regime}), "
        f"trained ratio {stats.trained_generation_ratio:.2f}, template {100 * stats.template_prompt_share:.0f}% of the prompt"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plw-plugins stats",
        description="Token statistics of an instruction dataset: its generation ratio R_g as the prompt loss weight "
        "study measures it (the data's own text, no template), the tokens the trainer trains (template included), "
        f"and what the study ({CITATION}) says about it.",
    )
    parser.add_argument("data", help="a JSON or JSON Lines file, or a folder written by datasets' save_to_disk")
    parser.add_argument("--tokenizer", required=True, help="tokenizer path or hub name (that of the model you train)")
    parser.add_argument("--format", choices=FORMATS, help="data format (default: detected from the first record)")
    parser.add_argument(
        "--template",
        help="Alpaca prompt template, a Python format string with {instruction} and optionally {input} "
        "(default: the Stanford Alpaca prompts); @FILE reads it from FILE",
    )
    parser.add_argument("--split", help="the split of a saved DatasetDict (default: train)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    weights = parser.add_argument_group(
        "loss weights", "the weights at which the loss share of each role is reported, as the training keys of the "
        "same names set them (unset: as the trainer does by default)"
    )
    for key in WEIGHT_KEYS:
        default = f" (default {DEFAULT_PROMPT_LOSS_WEIGHT:g})" if key == "prompt_loss_weight" else ""
        weights.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar="W", help=HELP[key] + default)
    parser.add_argument("--plot", metavar="FILE.png", help="write prompt and completion length histograms (needs matplotlib; makes the folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        weights = loss_weights_from_keys({key: getattr(args, key) for key in WEIGHT_KEYS})
    except ValueError as error:
        return fail("stats", error)
    try:
        template = template_argument(args.template)
        stats = dataset_stats(
            args.data, args.tokenizer, data_format=args.format, template=template, split=args.split, weights=weights
        )
    except DataError as error:
        return fail("stats", error)
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
    else:
        print(format_report(stats, source=args.data))
    if args.plot:
        try:
            plot_lengths(stats, args.plot, title=Path(args.data).name)
        except ImportError as error:
            print(
                f"plw-plugins stats: no plot written: --plot needs matplotlib ({error}); "
                'pip install matplotlib, or pip install "plw-plugins[stats]"',
                file=sys.stderr,
            )
        except OSError as error:
            print(f"plw-plugins stats: no plot written to {args.plot}: {error}", file=sys.stderr)
        else:
            if not args.json:
                print(f"length histograms written to {args.plot}")
    return 0
