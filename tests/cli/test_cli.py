"""The `plw-plugins` command itself: --version, the help of every subcommand, and the one-line
user errors of `tiny-model` (those of `demo`, `stats` and `sft` are tested with each command)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

from plw_plugins.cli import COMMANDS
from plw_plugins.cli import main as plw_plugins


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plw_plugins.cli", *argv], capture_output=True, text=True, timeout=300)


def test_version(capsys):
    assert plw_plugins(["--version"]) == 0
    assert capsys.readouterr().out == f"plw-plugins {version('plw-plugins')}\n"
    assert run("-V").stdout.strip() == f"plw-plugins {version('plw-plugins')}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_no_markup(command):
    done = run(command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: plw-plugins {command}")
    assert "``" not in done.stdout and ":class:" not in done.stdout


def test_unknown_command_exits_2(capsys):
    assert plw_plugins(["train"]) == 2
    assert "unknown command 'train'" in capsys.readouterr().err


def test_tiny_model_user_errors(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert plw_plugins(["tiny-model", str(a_file)]) == 2
    assert capsys.readouterr().err == f"plw-plugins tiny-model: error: {a_file}: exists and is not a folder\n"
    assert plw_plugins(["tiny-model", str(a_file / "model")]) == 2
    assert capsys.readouterr().err.startswith(f"plw-plugins tiny-model: error: {a_file / 'model'}: cannot write there")
