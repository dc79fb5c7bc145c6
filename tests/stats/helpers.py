"""Helpers of the stats tests: running the command, and a word-level tokenizer's token counts, known by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

from plw_plugins.cli.stats import main

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def run_json(capsys, *args) -> dict:
    assert main([*map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def run_error(capsys, *args) -> str:
    assert main(list(map(str, args))) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def pretokens(text: str) -> int:
    """What the word tokenizer makes of any text: one token per word or run of punctuation."""
    return len(re.findall(r"\w+|[^\w\s]+", text))
