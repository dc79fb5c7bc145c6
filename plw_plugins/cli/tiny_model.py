"""``plw-plugins tiny-model DIR``: a tiny Llama and a byte-level BPE tokenizer built locally, for the
demo, the examples, the tests and the benchmarks: nothing is fetched from a hub. Needs
``transformers`` and ``tokenizers`` (the ``trl`` or ``lightning`` extras), imported only when called.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .builtin_data import instruction_rows
from .errors import fail

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}<|assistant|>\n{% generation %}{{ message['content'] }}{{ eos_token }}"
    "{% endgeneration %}\n"
    "{% else %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tiny_tokenizer(*, vocab_size: int = 512, pad_is_eos: bool = False, texts: list[str] | None = None) -> Any:
    """A byte-level BPE tokenizer (no unknown tokens) trained on the built-in data or ``texts``.

    ``pad_is_eos`` gives it no pad token of its own, as many Llama tokenizers are shipped.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]
    if texts is None:
        texts = [row["prompt"] + row["completion"] for row in instruction_rows(2048)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>" if pad_is_eos else "<pad>",
        additional_special_tokens=specials[3:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama_config(tokenizer: Any, *, hidden_size: int = 64, layers: int = 2) -> Any:
    """The ``LlamaConfig`` of the tiny models: ``hidden_size`` wide, ``layers`` deep, sized to ``tokenizer``."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_llama(
    output_dir: str | Path | None = None,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    vocab_size: int = 512,
    pad_is_eos: bool = False,
    seed: int = 0,
) -> tuple[Any, Any]:
    """``(model, tokenizer)``: a randomly initialised ``LlamaForCausalLM`` and its tokenizer, saved to
    ``output_dir`` when given so that any framework can load them by path."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(vocab_size=vocab_size, pad_is_eos=pad_is_eos)
    config = tiny_llama_config(tokenizer, hidden_size=hidden_size, layers=layers)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if output_dir is not None:
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    return model, tokenizer


def main(argv: list[str]) -> int:
    """Save the built-in tiny Llama and tokenizer to a folder, e.g. for the offline Axolotl example."""
    parser = argparse.ArgumentParser(
        prog="plw-plugins tiny-model",
        description="Save the built-in tiny Llama (randomly initialised) and its byte-level BPE tokenizer to a "
        "folder, built locally: nothing is fetched from a hub. Needs transformers and tokenizers.",
    )
    parser.add_argument("output_dir", help="folder to write config, weights and tokenizer to")
    parser.add_argument("--pad-is-eos", action="store_true", help="use the eos token for padding, as many Llama tokenizers do")
    args = parser.parse_args(argv)
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        return fail("tiny-model", f"{args.output_dir}: exists and is not a folder")
    try:
        build_tiny_llama(args.output_dir, pad_is_eos=args.pad_is_eos)
    except ImportError as error:
        return fail("tiny-model", f"needs transformers and tokenizers ({error}): pip install 'plw-plugins[trl]'")
    except OSError as error:
        return fail("tiny-model", f"{args.output_dir}: cannot write there ({error.strerror or error})")
    print(f"saved a tiny Llama and its tokenizer to {args.output_dir}")
    return 0
