"""``plw-plugins demo``: fine-tune one pre-trained model at several prompt loss weights and measure
what the study (Huerta-Enochian & Ko, 2024, §5.3) says the weight does.

With no arguments it runs on a CPU in a few minutes: a tiny Llama that the package pre-trains on its
built-in general text (once; cached, see ``pretrained.py``) is fine-tuned with ``PLWSFTTrainer`` on
the built-in short-completion tasks at weights 0, 0.1 and 1, from the same weights, data order and
seed. Per weight it reports the final training and held-out prompt and completion losses, the loss
on held-out general text (what fine-tuning made the model forget) and how far the weights moved from
the pre-trained ones, then one line saying what those numbers show, and draws every curve.
``--model`` and ``--dataset`` run the same comparison on a real model and data; ``--quick`` is a
short run (less pre-training, fewer steps and rows).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plw_plugins.validation import validate_prompt_loss_weight

from .datasets import FORMATS, DataError, TemplatedRow, read_records, template_argument, to_prompt_completion
from .errors import fail, missing_path_error
from .pretrained import PretrainSettings

DEFAULT_WEIGHTS = "0,0.1,1"
BUILTIN_TRAIN_ROWS = 1200


@dataclass(frozen=True)
class Preset:
    """The defaults of a full run and of ``--quick``; a flag given explicitly wins."""

    max_steps: int
    held_out_rows: int
    general_rows: int
    pretrain: PretrainSettings


FULL = Preset(max_steps=150, held_out_rows=96, general_rows=64, pretrain=PretrainSettings())
QUICK = Preset(
    max_steps=30, held_out_rows=32, general_rows=24,
    pretrain=PretrainSettings(steps=60, batch_size=16, text_rows=1024),
)
TRAIN_SAMPLE_ROWS = 64
"""Training rows measured at the start, to tell whether the training prompt loss rose above it."""
INSTALL_HINT = "pip install 'plw-plugins[trl]'"
PLOT_HINT = "pip install matplotlib (or pip install 'plw-plugins[stats]')"


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


def builtin_split(count: int, seed: int, rows_needed: int = BUILTIN_TRAIN_ROWS) -> tuple[list[dict], list[dict]]:
    """Training rows (at most ``BUILTIN_TRAIN_ROWS``, no more than ``rows_needed``) and held-out rows of
    the built-in short-completion tasks: the held-out rows come from another seed, less any prompt
    that is also in the training rows."""
    from .builtin_data import short_instruction_rows

    if count < 1:
        raise DataError(f"--held-out-rows must be at least 1, got {count}")
    size = min(BUILTIN_TRAIN_ROWS, rows_needed)
    train = [{"prompt": r["prompt"], "completion": r["completion"]} for r in short_instruction_rows(size, seed=seed)]
    seen = {row["prompt"] for row in train}
    candidates = short_instruction_rows(4 * count, seed=seed + 1)
    held_out = [{"prompt": r["prompt"], "completion": r["completion"]} for r in candidates if r["prompt"] not in seen]
    return train, held_out[:count]


def records(rows: list[dict]) -> list[dict]:
    """Rows as the trainer's dataset holds them: a row whose prompt the package's template wrote keeps
    where the data's text lies in it, so that the template's tokens have their own role."""
    return [row.as_record() if isinstance(row, TemplatedRow) else row for row in rows]


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plw-plugins demo",
        description="Fine-tune one pre-trained model at several prompt loss weights with PLWSFTTrainer and measure, "
        "per weight, the training and held-out losses, the loss on held-out general text (forgetting) and how far "
        "the weights moved. With no arguments: a tiny Llama pre-trained by the package (cached) on the built-in "
        "short-completion tasks, on CPU, in a few minutes.",
    )
    parser.add_argument("--model", help="model path or hub name, the pre-trained start (default: the package's tiny Llama, pre-trained once and cached)")
    parser.add_argument("--dataset", help="JSON / JSON Lines file or saved dataset folder (default: built-in short-completion tasks)")
    parser.add_argument("--format", choices=FORMATS, help="format of --dataset (default: detected)")
    parser.add_argument("--template", help="Alpaca prompt template, as in plw-plugins stats --template")
    parser.add_argument("--split", help="the split of a saved DatasetDict (default: train)")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help=f"prompt loss weights to compare (default: {DEFAULT_WEIGHTS})")
    parser.add_argument("--quick", action="store_true", help=f"a short run: a shorter pre-training, {QUICK.max_steps} steps per weight, fewer held-out rows")
    parser.add_argument("--max-steps", type=int, help=f"optimizer steps per weight (default: {FULL.max_steps}, {QUICK.max_steps} with --quick)")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per step (default: 16)")
    parser.add_argument("--learning-rate", type=float, help="default: 1e-3 for the tiny model, 2e-5 for --model")
    parser.add_argument("--max-length", type=int, default=1024, help="truncate sequences to this many tokens (default: 1024)")
    parser.add_argument("--held-out-rows", type=int, help=f"rows held out for evaluation (default: {FULL.held_out_rows} of the built-in data, {QUICK.held_out_rows} with --quick; 10%%, at most 200, of --dataset)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data order and split (default: 0)")
    parser.add_argument("--output-dir", default="plw-demo", help="where results.json and loss_curves.png go (default: plw-demo)")
    parser.add_argument("--cache-dir", help="where the pre-trained tiny model is cached (default: $PLW_PLUGINS_CACHE, else $XDG_CACHE_HOME/plw-plugins, else ~/.cache/plw-plugins)")
    parser.add_argument("--verbose", action="store_true", help="show the trainer's per-step logs, warnings and evaluation bars")
    return parser


def check_arguments(args: argparse.Namespace) -> list[float]:
    """The weights; raises ``ValueError`` naming the flag for any bad value."""
    weights = parse_weights(args.weights)
    for flag in ("max_steps", "batch_size", "max_length"):
        value = getattr(args, flag)
        if value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.learning_rate is not None and not args.learning_rate > 0:
        raise ValueError(f"--learning-rate must be a positive number, got {args.learning_rate}")
    problem = args.model and missing_path_error("--model", args.model)
    if problem:
        raise ValueError(problem)
    return weights


def check_dependencies() -> bool:
    """Raise ``ImportError`` with the install command when TRL is missing; return whether the plot
    can be drawn (matplotlib), checked before any training."""
    for module in ("trl", "transformers", "datasets", "tokenizers"):
        try:
            __import__(module)
        except ImportError:
            raise ImportError(f"the demo needs {module}, which is not installed: {INSTALL_HINT}") from None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def quiet_libraries() -> None:
    """Keep the libraries' warnings and progress bars out of the terminal (``--verbose`` keeps them)."""
    import warnings

    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.max_steps = preset.max_steps if args.max_steps is None else args.max_steps
    try:
        weights = check_arguments(args)
        can_plot = check_dependencies()
        if args.dataset:
            train_rows, held_out_rows = file_split(args)
        else:
            count = preset.held_out_rows if args.held_out_rows is None else args.held_out_rows
            train_rows, held_out_rows = builtin_split(count, args.seed, args.max_steps * args.batch_size)
    except (ValueError, ImportError) as error:  # DataError is a ValueError
        return fail("demo", error)
    if not can_plot:
        print(f"matplotlib is not installed: the demo will print its table and write results.json, but draw no plot ({PLOT_HINT}).")
    if not args.verbose:
        quiet_libraries()

    from datasets import Dataset

    from .pretrained import general_text_split, pretrained_model
    from .stats import load_tokenizer

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model_path = args.model or str(pretrained_model(preset.pretrain, args.cache_dir))
    if args.learning_rate is None:
        args.learning_rate = 2e-5 if args.model else 1e-3
    try:
        tokenizer = load_tokenizer(model_path)
        classes = split_by_length_class(held_out_rows, tokenizer)
    except DataError as error:
        return fail("demo", error)
    _, general_rows = general_text_split(preset.pretrain.text_rows, preset.general_rows, preset.pretrain.seed)
    eval_sets = {
        "held_out": Dataset.from_list(records(held_out_rows)),
        "general": Dataset.from_list([{"text": text} for text in general_rows]),
        "train_sample": Dataset.from_list(records(train_rows[:TRAIN_SAMPLE_ROWS])),
    }
    print(
        f"model {model_path}; {len(train_rows)} training rows, {len(held_out_rows)} held out "
        f"({', '.join(f'{len(v)} {k}-completion' for k, v in classes.items())}), {len(general_rows)} passages of "
        f"general text held out; weights {', '.join(f'{w:g}' for w in weights)}, {args.max_steps} steps each"
    )

    from .demo_report import format_table, plot_curves, prompt_loss_rise_note, what_the_numbers_show
    from .demo_training import train_one

    class_sets = {name: Dataset.from_list(records(rows)) for name, rows in classes.items()} if len(classes) > 1 else {}
    train = Dataset.from_list(records(train_rows))
    results = [train_one(weight, args, model_path, tokenizer, train, eval_sets, class_sets) for weight in weights]
    for result in results:
        values = asdict(result.end).values()
        if not all(math.isfinite(value) for value in values):
            print(f"plw-plugins demo: error: a measurement at PLW {result.prompt_loss_weight:g} is not finite: {result.end}", file=sys.stderr)
            return 1

    results_path = output_dir / "results.json"
    results_path.write_text(json.dumps({"settings": vars(args), "runs": [asdict(r) for r in results]}, indent=1))
    table = format_table(results, {name: len(rows) for name, rows in classes.items()})
    print(
        f"\nLosses are mean NLL per token (training: the last {max(1, args.max_steps // 20)} steps; held-out: "
        f"{len(held_out_rows)} rows not trained on; general text: {len(general_rows)} passages of plain text); "
        "weight change: relative L2 distance of all weights from the start.\n"
        f"\n{table}\n\n{what_the_numbers_show(results)}"
    )
    note = prompt_loss_rise_note(results)
    if note:
        print(note)
    plot_path = output_dir / "loss_curves.png"
    data_name = Path(args.dataset).name if args.dataset else "built-in short-completion tasks"
    if can_plot:
        plot_curves(results, plot_path, f"{Path(model_path).name} on {data_name}, {args.max_steps} steps per weight")
        print(f"\nCurves: {plot_path}")
    else:
        print(f"\nNo plot: matplotlib is not installed; {PLOT_HINT}, then run again.")
    print(f"All numbers and the trainer's logs: {results_path}")
    return 0
