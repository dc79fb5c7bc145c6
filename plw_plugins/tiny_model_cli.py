"""``plw-plugins tiny-model DIR``: save the built-in tiny Llama and tokenizer, e.g. for the offline
Axolotl example."""

from __future__ import annotations

import argparse

from .tiny_model import build_tiny_llama


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="plw-plugins tiny-model", description=__doc__)
    parser.add_argument("output_dir", help="folder to write config, weights and tokenizer to")
    parser.add_argument("--pad-is-eos", action="store_true", help="use the eos token for padding, as many Llama tokenizers do")
    args = parser.parse_args(argv)
    build_tiny_llama(args.output_dir, pad_is_eos=args.pad_is_eos)
    print(f"saved a tiny Llama and its tokenizer to {args.output_dir}")
    return 0
