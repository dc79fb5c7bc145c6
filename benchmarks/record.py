"""Shared by the benchmark scripts: name the machine, print a table, record it in RESULTS.md.

Each script owns one section of ``benchmarks/RESULTS.md``, between ``<!-- begin NAME -->`` and
``<!-- end NAME -->``, and rewrites only that section, so scripts can be re-run one at a time.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """One line naming the machine the figures were measured on."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        cpu = platform.processor() or platform.machine()
        try:
            lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
            cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), cpu)
        except OSError:
            pass
        device = f"CPU {cpu}, {os.cpu_count()} cores"
    return f"{device}; torch {torch.__version__}"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def record(name: str, title: str, body: str) -> None:
    """Print ``body`` and write it as section ``name`` of RESULTS.md, replacing the old one."""
    section = f"<!-- begin {name} -->\n## {title}\n\n{body.strip()}\n<!-- end {name} -->"
    print(section)
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nWritten by the scripts in this folder.\n"
    pattern = re.compile(rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)
