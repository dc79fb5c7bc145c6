"""Fixtures of the stats tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import WORDS


@pytest.fixture(scope="session")
def word_tokenizer_dir(tmp_path_factory) -> Path:
    """A tokenizer with one token per word of ``WORDS`` (others are [UNK], punctuation apart), the tiny
    chat template and special tokens: content token counts are word counts, known exactly."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from plw_plugins.cli.tiny_model import CHAT_TEMPLATE

    specials = ["[UNK]", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>", "<|tool|>"]
    vocab = {word: index for index, word in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="[UNK]",
        additional_special_tokens=specials[4:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    path = tmp_path_factory.mktemp("word-tokenizer")
    tokenizer.save_pretrained(path)
    return path
