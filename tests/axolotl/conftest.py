"""Fixtures of the Axolotl tests: the data files and the shared ``axolotl train`` runs."""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import pytest

from plw_plugins.cli.builtin_data import instruction_messages

os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")  # before Axolotl is imported: no telemetry


def axolotl_installed() -> bool:
    # Not `find_spec`: with tests/ on sys.path, this very folder is a namespace package "axolotl".
    try:
        importlib.metadata.version("axolotl")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


if not axolotl_installed():  # these tests run in the Axolotl environment only
    collect_ignore_glob = ["*.py"]
else:
    from axolotl_harness import AxolotlRuns


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def alpaca_jsonl(tmp_path_factory, toolformer_rows) -> Path:
    """Four real Toolformer rows (short completions after long prompts), Alpaca format."""
    return write_jsonl(tmp_path_factory.mktemp("data") / "toolformer.jsonl", toolformer_rows[:4])


@pytest.fixture(scope="session")
def chat_jsonl(tmp_path_factory) -> Path:
    """Sixteen built-in conversations (one user and one assistant turn each)."""
    return write_jsonl(tmp_path_factory.mktemp("data") / "chat.jsonl", instruction_messages(16))


@pytest.fixture(scope="session")
def axolotl_runs(tmp_path_factory, tiny_model_dir, tiny_model_dir_pad_is_eos, alpaca_jsonl, chat_jsonl):
    runs = AxolotlRuns(
        tmp_path_factory.mktemp("axolotl-runs"),
        models={"own_pad": tiny_model_dir, "pad_is_eos": tiny_model_dir_pad_is_eos},
        datasets={"alpaca": alpaca_jsonl, "chat": chat_jsonl},
    )
    yield runs
    runs.close()
