"""``plw-plugins sft``: TRL's ``trl sft`` with ``PLWSFTTrainer`` and the prompt loss weight keys.

    plw-plugins sft --config examples/trl/sft.yaml
    plw-plugins sft --model_name_or_path ./tiny --dataset_name data.jsonl --output_dir out --prompt_loss_weight 0.1

Arguments are those of ``ScriptArguments``, ``PLWSFTConfig`` and ``ModelConfig``, from flags or a
YAML file (``--config``; flags override it). ``dataset_name`` may be a local file or folder; Alpaca
rows (``instruction``, ``input``, ``output``) are turned into prompt-completion rows.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

from plw_plugins.config import HELP

from .datasets import alpaca_to_prompt_completion
from .errors import fail, missing_path_error

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def load_sft_dataset(name: str, config: str | None = None, streaming: bool = False) -> Any:
    """A ``DatasetDict`` from a local file (json, jsonl, csv, parquet: all rows in its ``train`` split),
    a local dataset folder or a hub name. Alpaca-format rows become prompt-completion rows."""
    from datasets import load_dataset

    path = Path(name)
    if path.is_file():
        if path.suffix not in FILE_BUILDERS:
            raise ValueError(f"dataset_name={name!r}: unknown file type; use one of {', '.join(FILE_BUILDERS)}")
        dataset = load_dataset(FILE_BUILDERS[path.suffix], data_files=str(path), streaming=streaming)
    else:
        dataset = load_dataset(name, name=config, streaming=streaming)
    return {split: _as_prompt_completion(part) for split, part in dataset.items()}


def _as_prompt_completion(dataset: Any) -> Any:
    columns = set(dataset.column_names or [])
    if {"instruction", "output"} <= columns and "prompt" not in columns:
        return dataset.map(lambda record: alpaca_to_prompt_completion(record).as_record(), remove_columns=sorted(columns))
    return dataset


DESCRIPTION = """\
Fine-tune a model with TRL's SFTTrainer and a fractional prompt loss weight: TRL's own trl sft
command with PLWSFTTrainer in place of SFTTrainer. Every option of trl sft works as there, from
flags or a YAML file (--config FILE; flags override it); model_name_or_path and dataset_name may be
local folders and files. The prompt loss weight keys:

{keys}

All options, TRL's included, follow."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows defaults, as TRL's help does."""


def our_keys_help() -> str:
    """The prompt loss weight keys with their descriptions, for the top of ``--help``."""
    lines = []
    for key, text in HELP.items():
        lines.append(f"  --{key}")
        lines += textwrap.wrap(text, width=96, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def make_parser():
    from trl import ModelConfig, ScriptArguments

    from plw_plugins.integrations.trl import PLWSFTConfig, PLWTrlParser

    return PLWTrlParser(
        (ScriptArguments, PLWSFTConfig, ModelConfig),
        prog="plw-plugins sft",
        usage="plw-plugins sft [--config FILE] [--KEY VALUE ...]",
        description=DESCRIPTION.format(keys=our_keys_help()),
        formatter_class=_HelpFormatter,
    )


def parse(argv: list[str]) -> tuple[Any, Any, Any]:
    """The three argument objects; ``ValueError`` for a bad value or a missing file."""
    import yaml

    parser = make_parser()
    try:
        script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    except FileNotFoundError as error:
        raise ValueError(f"--config {error.filename}: no such file") from None
    except yaml.YAMLError as error:
        raise ValueError(f"--config: not valid YAML: {' '.join(str(error).split())}") from None
    if not script_args.dataset_name:
        raise ValueError("dataset_name is required (a local file, a local dataset folder or a hub name)")
    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is required (a local model folder or a hub name)")
    problem = missing_path_error("model_name_or_path", model_args.model_name_or_path) or missing_path_error(
        "dataset_name", script_args.dataset_name, "file or folder"
    )
    if problem:
        raise ValueError(problem)
    return script_args, training_args, model_args


def main(argv: list[str] | None = None) -> int:
    """Parse, train, save the model to ``output_dir``; return the exit status (2 for a user error:
    a bad value, a missing file or folder, a model that cannot be loaded)."""
    try:
        from trl import get_peft_config, get_quantization_config

        from plw_plugins.integrations.trl import PLWSFTTrainer
    except ImportError as error:
        return fail("sft", f"needs TRL ({error}): pip install 'plw-plugins[trl]'")
    try:
        script_args, training_args, model_args = parse(sys.argv[1:] if argv is None else argv)
    except ValueError as error:
        return fail("sft", error)

    model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    training_args.model_init_kwargs = {**model_init_kwargs, **(training_args.model_init_kwargs or {})}

    try:
        dataset = load_sft_dataset(script_args.dataset_name, script_args.dataset_config, script_args.dataset_streaming)
        if script_args.dataset_train_split not in dataset:
            raise ValueError(f"dataset_train_split={script_args.dataset_train_split!r} is not a split of {script_args.dataset_name}")
        evaluate = training_args.eval_strategy != "no"
        if evaluate and script_args.dataset_test_split not in dataset:
            raise ValueError(f"eval_strategy={training_args.eval_strategy!r} needs a {script_args.dataset_test_split!r} split")
        trainer = PLWSFTTrainer(
            model=model_args.model_name_or_path,
            args=training_args,
            train_dataset=dataset[script_args.dataset_train_split],
            eval_dataset=dataset[script_args.dataset_test_split] if evaluate else None,
            peft_config=get_peft_config(model_args),
            quantization_config=get_quantization_config(model_args),
        )
    except (ValueError, OSError) as error:  # bad data or settings, a model or dataset that cannot be loaded
        return fail("sft", " ".join(str(error).split()))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
