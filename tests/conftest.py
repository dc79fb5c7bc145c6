"""Fixtures shared by every test: tiny local models and the real datasets in ../shared/data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

# ../shared/data beside the checkout, or wherever PLW_SHARED_DATA points (a worktree elsewhere).
SHARED_DATA = Path(os.environ.get("PLW_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny Llama with its own pad token."""
    from plw_plugins.cli.tiny_model import build_tiny_llama

    path = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_llama(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir_pad_is_eos(tmp_path_factory) -> Path:
    """A saved tiny Llama whose tokenizer pads with its eos token, as many Llama tokenizers do."""
    from plw_plugins.cli.tiny_model import build_tiny_llama

    path = tmp_path_factory.mktemp("tiny-llama-pad-eos")
    build_tiny_llama(path, pad_is_eos=True)
    return path


def load_shared_alpaca(name: str, rows: int) -> list[dict[str, str]]:
    """The first ``rows`` rows of an Alpaca-format file in ../shared/data."""
    path = SHARED_DATA / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: ../shared/data must sit beside the project")
    return json.loads(path.read_text())[:rows]


@pytest.fixture(scope="session")
def toolformer_rows() -> list[dict[str, str]]:
    """64 short-completion rows of GPTeacher Toolformer (Alpaca format)."""
    return load_shared_alpaca("gpteacher_toolformer_alpaca.json", 64)


@pytest.fixture(scope="session")
def gsm8k_rows() -> list[dict[str, str]]:
    """64 rows of GSM8K (Alpaca format)."""
    return load_shared_alpaca("gsm8k_train_alpaca.json", 64)
