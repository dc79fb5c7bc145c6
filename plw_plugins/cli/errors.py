"""How the commands report a user's mistake: one line on stderr, exit status 2; and the check that
tells a local path that does not exist from a name the hub might know."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

USER_ERROR = 2
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt", ".yaml", ".yml")


def fail(command: str, message: object) -> int:
    """Print ``plw-plugins COMMAND: error: MESSAGE`` to stderr and return the user-error status."""
    print(f"plw-plugins {command}: error: {message}", file=sys.stderr)
    return USER_ERROR


def could_be_hub_name(value: str) -> bool:
    """Whether ``value`` has the shape of a hub repository id (``name`` or ``owner/name``) rather than
    of a local path (``./x``, ``/x``, ``~/x``, ``a/b/c``, ``x.jsonl``)."""
    return bool(_HUB_ID.match(value)) and ".." not in value and "--" not in value and not value.endswith(DATA_SUFFIXES)


def missing_path_error(key: str, value: str, what: str = "folder") -> str | None:
    """``"KEY='VALUE': no such folder"`` when ``value`` names no local path and cannot be a hub name
    (or the hub is offline); None when it exists or may be fetched from the hub."""
    if Path(value).expanduser().exists():
        return None
    if not could_be_hub_name(value):
        return f"{key}={value!r}: no such {what}"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return f"{key}={value!r}: no such {what} (and HF_HUB_OFFLINE is set, so it is not fetched from the hub)"
    return None
