"""``plw-plugins demo``: fine-tune one model at several prompt loss weights and compare the losses.

With no arguments it runs on CPU in about two minutes: a tiny Llama and tokenizer built locally, the
package's built-in instruction data (short- and long-completion tasks), ``PLWSFTTrainer`` at weights
0, 0.1 and 1 from the same initial weights, data order and seed. It prints, per weight, the final
training prompt and completion loss and the held-out completion loss (overall and for held-out rows
with a shorter / longer completion than prompt), and writes the loss curves as a PNG. ``--model`` and
``--dataset`` run the same comparison on a real model and data.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from plw_plugins.validation import validate_prompt_loss_weight

from .datasets import FORMATS, DataError, read_records, template_argument, to_prompt_completion

DEFAULT_WEIGHTS = "0,0.1,1"
BUILTIN_TRAIN_ROWS = 1200
BUILTIN_HELD_OUT_ROWS = 96
HELD_OUT_CLASSES = ("short", "long")  # held-out rows with a completion shorter than the prompt, and the rest


@dataclass
class WeightResult:
    """What one fine-tuning run at one prompt loss weight ended with, and its loss curves."""

    prompt_loss_weight: float
    train_prompt_loss: float
    train_completion_loss: float
    held_out_prompt_loss: float
    held_out_completion_loss: float
    held_out_completion_loss_by_class: dict[str, float]
    curves: dict[str, list[tuple[int, float]]] = field(repr=False)


def parse_weights(text: str) -> list[float]:
    """``"0,0.1,1"`` as floats, each checked to lie in [0, 1]."""
    weights = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"--weights: {item.strip()!r} is not a number (expected e.g. {DEFAULT_WEIGHTS})") from None
        weights.append(validate_prompt_loss_weight(value, name=f"--weights entry {item.strip()!r}"))
    if len(set(weights)) != len(weights):
        raise ValueError(f"--weights: {text!r} repeats a weight")
    return weights


def builtin_split(held_out_rows: int | None, seed: int) -> tuple[list[dict], list[dict]]:
    """Training and held-out rows of the built-in data: the held-out rows come from another seed,
    less any prompt that is also in the training rows."""
    from .builtin_data import instruction_rows

    count = BUILTIN_HELD_OUT_ROWS if held_out_rows is None else held_out_rows
    if count < 1:
        raise DataError(f"--held-out-rows must be at least 1, got {count}")
    train = [{"prompt": r["prompt"], "completion": r["completion"]} for r in instruction_rows(BUILTIN_TRAIN_ROWS, seed=seed)]
    seen = {row["prompt"] for row in train}
    candidates = instruction_rows(4 * count, seed=seed + 1)
    held_out = [{"prompt": r["prompt"], "completion": r["completion"]} for r in candidates if r["prompt"] not in seen]
    return train, held_out[:count]


def file_split(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """Rows of ``--dataset`` (anything ``plw-plugins stats`` reads), shuffled and split for held-out evaluation."""
    path, held_out_rows, seed = args.dataset, args.held_out_rows, args.seed
    data = to_prompt_completion(read_records(path, split=args.split), args.format, template=template_argument(args.template))
    rows = list(data.rows)
    if data.skipped_rows:
        reasons = "; ".join(f"{count} {reason}" for reason, count in data.skipped.most_common())
        print(f"{path}: skipped {data.skipped_rows} rows ({reasons})")
    if len(rows) < 2:
        raise DataError(f"{path}: {len(rows)} usable rows; the demo needs at least 2 (one to train, one held out)")
    random.Random(seed).shuffle(rows)
    count = held_out_rows if held_out_rows is not None else max(1, min(200, len(rows) // 10))
    if not 0 < count < len(rows):
        raise DataError(f"--held-out-rows {count} must be between 1 and {len(rows) - 1} for {len(rows)} rows")
    return rows[count:], rows[:count]


def split_by_length_class(rows: list[dict], tokenizer: Any) -> dict[str, list[dict]]:
    """Held-out rows split by their own generation ratio as the study defines R_g, content tokens
    without template or special tokens (completion shorter than prompt: ``short``)."""
    from .stats import content_lengths

    prompt_lengths, completion_lengths = content_lengths(rows, tokenizer)
    classes: dict[str, list[dict]] = {"short": [], "long": []}
    for row, p, c in zip(rows, prompt_lengths, completion_lengths):
        classes["short" if c < p else "long"].append(row)
    return {name: subset for name, subset in classes.items() if subset}


def curves_from(log_history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Training prompt / completion loss and held-out completion loss against the step."""
    keys = {"train_prompt_loss": "prompt_loss", "train_completion_loss": "completion_loss"}
    curves: dict[str, list[tuple[int, float]]] = {name: [] for name in (*keys, "held_out_completion_loss")}
    for entry in log_history:
        step = entry.get("step", 0)
        if "eval_held_out_completion_loss" in entry:
            curves["held_out_completion_loss"].append((step, entry["eval_held_out_completion_loss"]))
        elif "loss" in entry:
            for name, key in keys.items():
                if key in entry:
                    curves[name].append((step, entry[key]))
    return curves


def train_one(weight: float, args: argparse.Namespace, model_path: str, tokenizer: Any, train: Any, held_out: dict[str, Any]) -> WeightResult:
    """Fine-tune a fresh copy of the model at ``weight``; the seed fixes initial weights and data order."""
    import torch
    from transformers import AutoModelForCausalLM, set_seed

    from plw_plugins.integrations.trl import PLWSFTConfig, PLWSFTTrainer

    set_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    config = PLWSFTConfig(
        output_dir=str(Path(args.output_dir) / f"plw-{weight:g}"),
        prompt_loss_weight=weight,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.max_steps // 20),
        logging_steps=max(1, args.max_steps // 20),
        eval_strategy="steps",
        eval_steps=max(1, args.max_steps // 8),
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        data_seed=args.seed,
        max_length=args.max_length,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=bool(args.model),  # TRL's default; only a waste on the tiny model
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = PLWSFTTrainer(
        model=model, args=config, train_dataset=train, eval_dataset={"held_out": held_out["all"]}, processing_class=tokenizer
    )
    print(f"\n== prompt_loss_weight = {weight:g} ==")
    trainer.evaluate()  # the held-out loss at step 0, the same for every weight
    start = trainer.state.log_history[-1]  # train() starts a new log history
    trainer.train()
    evaluated = [e.get("step") for e in trainer.state.log_history if "eval_held_out_loss" in e]
    if not evaluated or evaluated[-1] != trainer.state.global_step:
        trainer.evaluate(metric_key_prefix="eval_held_out", eval_dataset=held_out["all"])
    by_class = {}
    for name in HELD_OUT_CLASSES:
        if name in held_out:
            metrics = trainer.evaluate(eval_dataset=held_out[name], metric_key_prefix=f"eval_{name}")
            by_class[name] = metrics[f"eval_{name}_completion_loss"]
    curves = curves_from([start, *trainer.state.log_history])
    final_eval = next(e for e in reversed(trainer.state.log_history) if "eval_held_out_loss" in e)
    return WeightResult(
        prompt_loss_weight=weight,
        train_prompt_loss=curves["train_prompt_loss"][-1][1],
        train_completion_loss=curves["train_completion_loss"][-1][1],
        held_out_prompt_loss=final_eval["eval_held_out_prompt_loss"],
        held_out_completion_loss=final_eval["eval_held_out_completion_loss"],
        held_out_completion_loss_by_class=by_class,
        curves=curves,
    )


def format_table(results: list[WeightResult], class_sizes: dict[str, int]) -> str:
    """One row per weight: final training losses and held-out losses (mean NLL per token)."""
    classes = [name for name in HELD_OUT_CLASSES if name in class_sizes]
    header = ["PLW", "train prompt", "train completion", "held-out prompt", "held-out completion"]
    header += [f"held-out completion, {name} ({class_sizes[name]} rows)" for name in classes]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    for result in results:
        cells = [
            f"{result.prompt_loss_weight:g}",
            f"{result.train_prompt_loss:.3f}",
            f"{result.train_completion_loss:.3f}",
            f"{result.held_out_prompt_loss:.3f}",
            f"{result.held_out_completion_loss:.3f}",
        ]
        cells += [f"{result.held_out_completion_loss_by_class[name]:.3f}" for name in classes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(results: list[WeightResult], path: Path, title: str) -> None:
    """Three panels against the step: training prompt loss, training completion loss, held-out completion loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("train_prompt_loss", "training prompt loss"),
        ("train_completion_loss", "training completion loss"),
        ("held_out_completion_loss", "held-out completion loss"),
    )
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colors = plt.get_cmap("viridis")
    for index, result in enumerate(results):
        color = colors(index / max(1, len(results) - 1) * 0.9)
        for axis, (key, _) in zip(axes, panels):
            points = result.curves[key]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, marker="o" if len(points) < 12 else None, markersize=3, color=color,
                          label=f"PLW {result.prompt_loss_weight:g}")
    for axis, (_, label) in zip(axes, panels):
        axis.set_title(label)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("mean NLL per token")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plw-plugins demo",
        description="Fine-tune a model at several prompt loss weights with PLWSFTTrainer and compare the final "
        "training and held-out losses. With no arguments: a tiny local Llama on the built-in data, on CPU.",
    )
    parser.add_argument("--model", help="model path or hub name (default: a tiny Llama built in OUTPUT_DIR/tiny-model)")
    parser.add_argument("--dataset", help="JSON / JSON Lines file or saved dataset folder (default: built-in data)")
    parser.add_argument("--format", choices=FORMATS, help="format of --dataset (default: detected)")
    parser.add_argument("--template", help="Alpaca prompt template, as in `plw-plugins stats --template`")
    parser.add_argument("--split", help="the split of a saved DatasetDict (default: train)")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help=f"prompt loss weights to compare (default: {DEFAULT_WEIGHTS})")
    parser.add_argument("--max-steps", type=int, default=150, help="optimizer steps per weight (default: 150)")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per step (default: 16)")
    parser.add_argument("--learning-rate", type=float, help="default: 2e-3 for the tiny model, 2e-5 for --model")
    parser.add_argument("--max-length", type=int, default=1024, help="truncate sequences to this many tokens (default: 1024)")
    parser.add_argument("--held-out-rows", type=int, help=f"rows held out for evaluation (default: {BUILTIN_HELD_OUT_ROWS} for the built-in data, 10%%, at most 200, of --dataset)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model copy, data order and split (default: 0)")
    parser.add_argument("--output-dir", default="plw-demo", help="where the model, results.json and loss_curves.png go")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        weights = parse_weights(args.weights)
        if args.max_steps < 1:
            raise ValueError(f"--max-steps must be at least 1, got {args.max_steps}")
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
        if args.dataset:
            train_rows, held_out_rows = file_split(args)
        else:
            train_rows, held_out_rows = builtin_split(args.held_out_rows, args.seed)
    except ValueError as error:  # DataError is a ValueError
        print(f"plw-plugins demo: error: {error}", file=sys.stderr)
        return 2

    from datasets import Dataset

    from .stats import load_tokenizer

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.model:
        model_path = args.model
    else:
        from .tiny_model import build_tiny_llama

        model_path = str(output_dir / "tiny-model")
        build_tiny_llama(model_path, seed=args.seed)
    if args.learning_rate is None:
        args.learning_rate = 2e-5 if args.model else 2e-3
    try:
        tokenizer = load_tokenizer(model_path)
        classes = split_by_length_class(held_out_rows, tokenizer)
    except DataError as error:
        print(f"plw-plugins demo: error: {error}", file=sys.stderr)
        return 2
    held_out = {"all": Dataset.from_list(held_out_rows), **{k: Dataset.from_list(v) for k, v in classes.items()}}
    train = Dataset.from_list(train_rows)
    print(
        f"model {model_path}; {len(train_rows)} training rows, {len(held_out_rows)} held out "
        f"({', '.join(f'{len(v)} {k}-completion' for k, v in classes.items())}); weights {', '.join(f'{w:g}' for w in weights)}"
    )

    results = [train_one(weight, args, model_path, tokenizer, train, held_out) for weight in weights]
    for result in results:
        values = [result.train_prompt_loss, result.train_completion_loss, result.held_out_completion_loss]
        if not all(math.isfinite(value) for value in values):
            print(f"plw-plugins demo: error: a loss at PLW {result.prompt_loss_weight:g} is not finite: {values}", file=sys.stderr)
            return 1

    class_sizes = {name: len(rows) for name, rows in classes.items()}
    table = format_table(results, class_sizes)
    plot_path = output_dir / "loss_curves.png"
    data_name = Path(args.dataset).name if args.dataset else "built-in data"
    plot_curves(results, plot_path, f"{Path(model_path).name} on {data_name}, {args.max_steps} steps per weight")
    (output_dir / "results.json").write_text(json.dumps([asdict(result) for result in results], indent=2))
    print(
        f"\nFinal losses (mean NLL per token; training: the last {max(1, args.max_steps // 20)} steps; "
        f"held-out: {len(held_out_rows)} rows not trained on):\n\n{table}\n\n"
        "The prompt loss weight scales how much the prompt tokens are trained: at 0 not at all, at 1 like the "
        "completion. "
        + (
            ""
            if args.model
            else "A randomly initialised tiny model shows the mechanics only: the study's effect on downstream "
            "scores comes from keeping a pre-trained model close to its weights, so try --model with a real one. "
        )
        + "Run `plw-plugins stats` on your data to see whether the weight matters for it.\n"
        f"\nLoss curves: {plot_path}\nAll numbers: {output_dir / 'results.json'}"
    )
    return 0
