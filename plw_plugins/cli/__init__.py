"""``plw-plugins``: the command line, the top floor. Each subcommand lives in its own module and is
imported only when run, so that ``plw-plugins stats`` needs no TRL and ``plw-plugins sft`` no matplotlib."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("plw_plugins.cli.demo", "fine-tune a pre-trained tiny model at several prompt loss weights and measure the effect"),
    "stats": ("plw_plugins.cli.stats", "token statistics of a dataset and whether the prompt loss weight matters for it"),
    "sft": ("plw_plugins.cli.sft", "TRL's trl sft command with PLWSFTTrainer and the prompt_loss_weight keys"),
    "tiny-model": ("plw_plugins.cli.tiny_model", "save the built-in tiny Llama and tokenizer to a folder"),
}


def usage() -> str:
    lines = ["usage: plw-plugins [--version] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<11} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "plw-plugins COMMAND --help explains each."]
    return "\n".join(lines)


def version() -> str:
    """The installed package's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("plw-plugins")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand: each module's ``main(argv)`` takes the arguments after its name."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"plw-plugins {version()}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"plw-plugins: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest) or 0

