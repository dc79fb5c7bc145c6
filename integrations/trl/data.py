"""Local datasets for ``plw-plugins sft``: files by suffix, and Alpaca rows as prompt-completion rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plw_plugins.datasets import alpaca_to_prompt_completion

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
        return dataset.map(alpaca_to_prompt_completion, remove_columns=sorted(columns))
    return dataset
