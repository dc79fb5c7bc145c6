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
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field, fields, is_dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from .advice import CITATION, advice
from .datasets import FORMATS, DataError, PromptCompletionRows, read_records, template_argument, to_prompt_completion


RATIO = {"digits": 3}  # ratios print as 0.216 and shares as 82.2%: --json rounds them alike
LENGTH = {"digits": 1}  # token lengths per row print as 298.8
ROLES = ("system", "user", "tool", "history", "completion", "template")
# the role_tokens key of each message role before the final assistant turn; any other role counts as user
ROLE_OF = {"system": "system", "developer": "system", "tool": "tool", "function": "tool", "ipython": "tool", "assistant": "history"}


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


@dataclass
class DatasetStats:
    """Token statistics of a dataset, as ``plw-plugins stats --json`` prints them (less the raw lengths).

    ``prompt_*`` and ``completion_*`` count content, the study's way; ``trained_*`` and ``template_*``
    count what the trainer trains."""

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
        )

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


def _locate(text: str, pieces: list[tuple[str, str]]) -> tuple[list[tuple[int, int, str]], int]:
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


def _labels(tokens: Any, spans: list[tuple[int, int, str]]) -> Any:
    """Each token's span, from its ``(start, end)`` character offsets (an n x 2 array): the index of
    the span it overlaps most, ``len(spans)`` (the template) where it overlaps none: scaffolding, and
    special tokens added outside the text."""
    import numpy as np

    bounds = np.asarray([(start, end) for start, end, _ in spans], dtype=np.int64).reshape(-1, 2)
    overlap = np.minimum(tokens[:, 1:], bounds[:, 1]) - np.maximum(tokens[:, :1], bounds[:, 0])
    overlap = np.concatenate([overlap, np.zeros((len(tokens), 1), dtype=np.int64)], axis=1)  # the template column
    return np.where(overlap.max(axis=1) > 0, overlap.argmax(axis=1), len(spans))


Layout = tuple[str, str, list[tuple[int, int, str]]]  # the prompt's text, the whole row's text, its content spans


def _text_layout(row: dict[str, Any], eos: str) -> Layout:
    """A text row as the trainer writes it: prompt, then prompt + completion + eos; the prompt's
    content is all of it, or the ranges a template filled in."""
    prompt, completion = row["prompt"], row["completion"]
    content = getattr(row, "content_spans", None)
    spans = [(a, b, "prompt") for a, b in (content if content is not None else [(0, len(prompt))])]
    spans.append((len(prompt), len(prompt) + len(completion), "completion"))
    return prompt, prompt + completion + ("" if completion.endswith(eos) else eos), spans


def _chat_layouts(rows: list[dict[str, Any]], tokenizer: Any) -> tuple[list[Layout], int]:
    """Conversations through the chat template: the prompt with the generation prompt, the whole
    conversation, each message's content located by role; and how many contents were not found."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("conversational data needs a tokenizer with a chat template; this one has none")
    conversations = [row["prompt"] + row["completion"] for row in rows]
    prompts = tokenizer.apply_chat_template([row["prompt"] for row in rows], add_generation_prompt=True, tokenize=False)
    layouts, unlocated = [], 0
    for row, prompt, text, messages in zip(rows, prompts, tokenizer.apply_chat_template(conversations, tokenize=False), conversations):
        roles = [ROLE_OF.get(m["role"], "user") for m in row["prompt"]] + ["completion"] * len(row["completion"])
        spans, missing = _locate(text, [(role, m["content"]) for role, m in zip(roles, messages)])
        layouts.append((prompt, text, spans))
        unlocated += missing
    return layouts, unlocated


def trained_tokens(rows: list[dict[str, Any]], tokenizer: Any) -> TrainedTokens:
    """Prompt and completion token counts of prompt-completion rows as ``SFTTrainer`` tokenises them
    (text prompts with the tokenizer's own special tokens and an eos appended to the completion;
    message lists through the chat template), the template tokens of each prompt, and the
    conversations' tokens by role. Batched: two tokenizer calls per kind of row."""
    import numpy as np

    chat_index = [i for i, row in enumerate(rows) if isinstance(row["prompt"], list)]
    text_index = [i for i, row in enumerate(rows) if not isinstance(row["prompt"], list)]
    layouts: list[Layout] = [("", "", [])] * len(rows)
    for i in text_index:
        layouts[i] = _text_layout(rows[i], tokenizer.eos_token or "")
    unlocated = 0
    if chat_index:
        chat_layouts, unlocated = _chat_layouts([rows[i] for i in chat_index], tokenizer)
        for i, layout in zip(chat_index, chat_layouts):
            layouts[i] = layout

    count = len(rows)
    result = TrainedTokens([0] * count, [0] * count, [0] * count, dict.fromkeys(ROLES, 0) if chat_index else None, unlocated)
    for index, special in ((text_index, True), (chat_index, False)):  # the chat template writes its own special tokens
        if not index:
            continue
        prompt_ids = tokenizer([layouts[i][0] for i in index], add_special_tokens=special)["input_ids"]
        full = tokenizer([layouts[i][1] for i in index], add_special_tokens=special, return_offsets_mapping=True)
        flat = chain.from_iterable(chain.from_iterable(full["offset_mapping"]))  # one array, not one per row
        offsets = np.fromiter(flat, dtype=np.int64).reshape(-1, 2)
        ends = np.cumsum([len(ids) for ids in full["input_ids"]]).tolist()
        for i, p, f, end in zip(index, prompt_ids, full["input_ids"], ends):
            spans = layouts[i][2]
            labels = _labels(offsets[end - len(f) : end], spans)
            n = _common_prefix_length(p, f)
            result.prompt_lengths[i], result.completion_lengths[i] = n, len(f) - n
            result.template_prompt_lengths[i] = int((labels[:n] == len(spans)).sum())
            if not special:
                counts = np.bincount(labels, minlength=len(spans) + 1).tolist()
                for (_, _, role), tokens in zip([*spans, (0, 0, "template")], counts):
                    result.role_tokens[role] += tokens
    return result


def compute_stats(data: PromptCompletionRows, tokenizer: Any) -> DatasetStats:
    """The statistics of already converted rows; raises :class:`DataError` when no row is usable."""
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
) -> DatasetStats:
    """Statistics of the dataset at ``path`` (JSON, JSON Lines or a saved dataset folder).

    ``tokenizer`` is a tokenizer object or a path or hub name to load one from.
    """
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    records = read_records(path, split=split)
    return compute_stats(to_prompt_completion(records, data_format, template=template), tokenizer)


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
    lines += [paragraph + "\n" for paragraph in stats.advice()]
    return "\n".join(lines).rstrip() + "\n"


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
    parser.add_argument("--plot", metavar="FILE.png", help="write prompt and completion length histograms (needs matplotlib; makes the folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        template = template_argument(args.template)
        stats = dataset_stats(args.data, args.tokenizer, data_format=args.format, template=template, split=args.split)
    except DataError as error:
        print(f"plw-plugins stats: error: {error}", file=sys.stderr)
        return 2
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
