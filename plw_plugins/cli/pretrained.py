"""The demo's starting point: a tiny Llama that the package pre-trains itself on its built-in general
text, so that fine-tuning starts, as in the study, from weights that already model language.

Pre-training takes a minute or so on a CPU, so the model is cached, keyed by its settings, under
``$PLW_PLUGINS_CACHE``, else ``$XDG_CACHE_HOME/plw-plugins``, else ``~/.cache/plw-plugins``;
only the first run pays for it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .builtin_data import general_text, short_instruction_rows

CACHE_ENV = "PLW_PLUGINS_CACHE"
RECIPE_VERSION = 2
"""Bump when the recipe changes in a way the settings do not show, so that old caches are not reused."""


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that determines the pre-trained model: the cache key."""

    hidden_size: int = 64
    layers: int = 2
    vocab_size: int = 768
    steps: int = 250
    batch_size: int = 32
    learning_rate: float = 3e-3
    text_rows: int = 4096
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({"recipe": RECIPE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_root(override: str | Path | None = None) -> Path:
    """Where pre-trained models are cached: ``override``, ``$PLW_PLUGINS_CACHE``,
    ``$XDG_CACHE_HOME/plw-plugins`` or ``~/.cache/plw-plugins``, in that order."""
    if override is not None:
        return Path(override)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "plw-plugins"


def general_text_split(train_rows: int, held_out_rows: int, seed: int) -> tuple[list[str], list[str]]:
    """Pre-training passages and held-out passages (another seed, less any passage trained on)."""
    train = general_text(train_rows, seed=seed)
    seen = set(train)
    held_out = [text for text in general_text(2 * held_out_rows, seed=seed + 1) if text not in seen]
    return train, held_out[:held_out_rows]


def build_demo_tokenizer(vocab_size: int) -> Any:
    """The tiny BPE tokenizer trained on the general text and the short-completion tasks."""
    from .tiny_model import build_tiny_tokenizer

    texts = general_text(2048, seed=0) + [row["prompt"] + row["completion"] for row in short_instruction_rows(1024)]
    return build_tiny_tokenizer(vocab_size=vocab_size, texts=texts)


def pretrained_model(
    settings: PretrainSettings, cache: str | Path | None = None, report: Callable[[str], None] = print
) -> Path:
    """The folder of the pre-trained model for ``settings``, pre-training and caching it on first use."""
    folder = cache_root(cache) / f"tiny-llama-{settings.key()}"
    if (folder / "config.json").exists():
        report(f"pre-trained tiny model: {folder} (cached)")
        return folder
    report(f"pre-training a tiny model on the built-in general text ({settings.steps} steps, once; cached in {folder})")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    try:
        pretrain(settings, staging)
        try:
            staging.rename(folder)
        except OSError:  # another run cached it meanwhile
            if not (folder / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def pretrain(settings: PretrainSettings, output_dir: Path) -> None:
    """Train a freshly initialised tiny Llama on the general text (next-token loss on every token,
    AdamW, warm-up then cosine decay) and save it with its tokenizer to ``output_dir``."""
    import torch
    from transformers import LlamaForCausalLM

    from .tiny_model import tiny_llama_config

    tokenizer = build_demo_tokenizer(settings.vocab_size)
    torch.manual_seed(settings.seed)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, hidden_size=settings.hidden_size, layers=settings.layers))
    texts, _ = general_text_split(settings.text_rows, 0, settings.seed)
    sequences = [ids + [tokenizer.eos_token_id] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    warmup = max(1, settings.steps // 20)

    def scale(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, settings.steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
    order = random.Random(settings.seed)
    model.train()
    for _ in range(settings.steps):
        batch = order.sample(sequences, settings.batch_size)
        input_ids, attention_mask, labels = pad_batch(batch, tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[Any, Any, Any]:
    """``(input_ids, attention_mask, labels)`` of right-padded sequences, padding labelled -100."""
    import torch

    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return input_ids, attention_mask, labels
