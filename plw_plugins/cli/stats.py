"""``plw-plugins stats``: how many tokens of a dataset are prompt and how many completion, counted
the way the trainer counts them, and whether the prompt loss weight matters for it.

Prompt and completion are tokenised as TRL's ``SFTTrainer`` tokenises prompt-completion rows: the
prompt alone, then prompt + completion (+ eos for text); the completion starts where the two token
sequences first differ. The generation ratio R_g is the mean completion length over the mean prompt
length, the quantity the prompt loss weight study classifies datasets by.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .advice import CITATION, advice
from .datasets import FORMATS, DataError, PromptCompletionRows, read_records, template_argument, to_prompt_completion


@dataclass
class LengthSummary:
    """Token lengths of one part of the rows (prompt or completion)."""

    mean: float
    p50: float
    p90: float
    p99: float
    max: int


@dataclass
class DatasetStats:
    """Token statistics of a dataset, as ``plw-plugins stats --json`` prints them (less the raw lengths)."""

    format: str
    rows: int
    skipped_rows: int
    skipped_reasons: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    prompt_length: LengthSummary
    completion_length: LengthSummary
    generation_ratio: float
    generation_ratio_mean_of_rows: float
    prompt_token_share: float
    short_completion_row_share: float
    prompt_lengths: list[int] = field(repr=False)
    completion_lengths: list[int] = field(repr=False)

    @property
    def short_completion(self) -> bool:
        return self.generation_ratio < 1.0

    def advice(self) -> list[str]:
        return advice(
            self.generation_ratio,
            self.generation_ratio_mean_of_rows,
            self.prompt_tokens,
            self.completion_tokens,
            self.short_completion_row_share,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["prompt_lengths"], data["completion_lengths"]
        data["short_completion"] = self.short_completion
        data["advice"] = self.advice()
        data["citation"] = CITATION
        return data


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


def token_lengths(rows: list[dict[str, Any]], tokenizer: Any) -> tuple[list[int], list[int]]:
    """Prompt and completion token counts of prompt-completion rows, in batches, as ``SFTTrainer``
    tokenises them: text prompts with the tokenizer's own special tokens and an eos appended to the
    completion; message lists through the chat template (the prompt with the generation prompt)."""
    chat = [isinstance(row["prompt"], list) for row in rows]
    prompt_ids: list[list[int]] = [[] for _ in rows]
    full_ids: list[list[int]] = [[] for _ in rows]
    text_index = [i for i, is_chat in enumerate(chat) if not is_chat]
    chat_index = [i for i, is_chat in enumerate(chat) if is_chat]
    if text_index:
        eos = tokenizer.eos_token or ""
        prompts = [rows[i]["prompt"] for i in text_index]
        fulls = [
            rows[i]["prompt"] + rows[i]["completion"] + ("" if rows[i]["completion"].endswith(eos) else eos)
            for i in text_index
        ]
        for i, p, f in zip(text_index, tokenizer(prompts)["input_ids"], tokenizer(fulls)["input_ids"]):
            prompt_ids[i], full_ids[i] = p, f
    if chat_index:
        if not getattr(tokenizer, "chat_template", None):
            raise DataError("conversational data needs a tokenizer with a chat template; this one has none")
        prompts = [rows[i]["prompt"] for i in chat_index]
        fulls = [rows[i]["prompt"] + rows[i]["completion"] for i in chat_index]
        rendered_prompts = tokenizer.apply_chat_template(prompts, add_generation_prompt=True, return_dict=True)
        rendered_fulls = tokenizer.apply_chat_template(fulls, return_dict=True)
        for i, p, f in zip(chat_index, rendered_prompts["input_ids"], rendered_fulls["input_ids"]):
            prompt_ids[i], full_ids[i] = p, f
    prompt_lengths = [_common_prefix_length(p, f) for p, f in zip(prompt_ids, full_ids)]
    completion_lengths = [len(f) - n for f, n in zip(full_ids, prompt_lengths)]
    return prompt_lengths, completion_lengths


def compute_stats(data: PromptCompletionRows, tokenizer: Any) -> DatasetStats:
    """The statistics of already converted rows; raises :class:`DataError` when no row is usable."""
    if not data.rows:
        reasons = ", ".join(f"{count} {reason}" for reason, count in data.skipped.most_common()) or "no records"
        raise DataError(f"no usable rows in the {data.format} data ({reasons})")
    prompt_lengths, completion_lengths = token_lengths(data.rows, tokenizer)
    prompt_tokens, completion_tokens = sum(prompt_lengths), sum(completion_lengths)
    ratios = [c / p for p, c in zip(prompt_lengths, completion_lengths) if p > 0]
    prompt_mean = prompt_tokens / len(prompt_lengths)
    return DatasetStats(
        format=data.format,
        rows=len(data.rows),
        skipped_rows=data.skipped_rows,
        skipped_reasons=dict(data.skipped.most_common()),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        prompt_length=summarize(prompt_lengths),
        completion_length=summarize(completion_lengths),
        generation_ratio=(completion_tokens / len(completion_lengths)) / prompt_mean if prompt_mean else float("inf"),
        generation_ratio_mean_of_rows=sum(ratios) / len(ratios) if ratios else float("inf"),
        prompt_token_share=prompt_tokens / (prompt_tokens + completion_tokens),
        short_completion_row_share=sum(c < p for p, c in zip(prompt_lengths, completion_lengths)) / len(prompt_lengths),
        prompt_lengths=prompt_lengths,
        completion_lengths=completion_lengths,
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


def format_report(stats: DatasetStats, source: str = "") -> str:
    """The human-readable report: counts, length percentiles, ratios, then the advice."""
    skipped = f"{stats.skipped_rows:,} skipped"
    if stats.skipped_reasons:
        skipped += " (" + "; ".join(f"{count:,} {reason}" for reason, count in stats.skipped_reasons.items()) + ")"
    lines = [
        f"{source} ({stats.format} format)" if source else f"{stats.format} format",
        f"rows: {stats.rows:,} used, {skipped}",
        "",
        f"{'tokens':<18}{'prompt':>12}{'completion':>12}",
        f"{'total':<18}{stats.prompt_tokens:>12,}{stats.completion_tokens:>12,}",
    ]
    for key in ("mean", "p50", "p90", "p99", "max"):
        p, c = getattr(stats.prompt_length, key), getattr(stats.completion_length, key)
        lines.append(f"{key + ' per row':<18}{p:>12,.1f}{c:>12,.1f}")
    lines += [
        "",
        f"generation ratio R_g (mean completion / mean prompt length): {stats.generation_ratio:.3f}",
        f"mean of per-row completion/prompt ratios:                    {stats.generation_ratio_mean_of_rows:.3f}",
        f"rows with a shorter completion than prompt:                  {100 * stats.short_completion_row_share:.1f}%",
        f"share of tokens that are prompt:                             {100 * stats.prompt_token_share:.1f}%",
        "",
    ]
    lines += [paragraph + "\n" for paragraph in stats.advice()]
    return "\n".join(lines).rstrip() + "\n"


def plot_lengths(stats: DatasetStats, path: str | Path, title: str = "") -> None:
    """Write a PNG with the prompt and completion length histograms side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True, sharey=True)
    parts = (
        ("prompt", stats.prompt_lengths, stats.prompt_length, "tab:blue"),
        ("completion", stats.completion_lengths, stats.completion_length, "tab:orange"),
    )
    for axis, (name, lengths, summary, color) in zip(axes, parts):
        axis.hist(lengths, bins=min(60, max(10, len(set(lengths)))), color=color, alpha=0.85)
        axis.axvline(summary.mean, color="black", linestyle="--", linewidth=1, label=f"mean {summary.mean:.1f}")
        axis.axvline(summary.p90, color="gray", linestyle=":", linewidth=1, label=f"p90 {summary.p90:.0f}")
        axis.set_title(f"{name} length (tokens)")
        axis.set_xlabel("tokens per row")
        axis.tick_params(labelbottom=True)
        axis.legend()
    axes[0].set_ylabel("rows")
    regime = "short-completion" if stats.short_completion else "long-completion"
    figure.suptitle(
        f"{title + ': ' if title else ''}{stats.rows:,} rows, R_g = {stats.generation_ratio:.2f} ({regime}), "
        f"prompt share {100 * stats.prompt_token_share:.0f}%"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plw-plugins stats",
        description="Token statistics of an instruction dataset, counted as the trainer tokenises it, and what "
        f"the prompt loss weight study ({CITATION}) says about it.",
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
    parser.add_argument("--plot", metavar="FILE.png", help="write prompt and completion length histograms")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        template = template_argument(args.template)
        stats = dataset_stats(args.data, args.tokenizer, data_format=args.format, template=template, split=args.split)
    except DataError as error:
        print(f"plw-plugins stats: error: {error}", file=sys.stderr)
        return 2
    if args.plot:
        plot_lengths(stats, args.plot, title=Path(args.data).name)
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
    else:
        print(format_report(stats, source=args.data))
        if args.plot:
            print(f"length histograms written to {args.plot}")
    return 0
