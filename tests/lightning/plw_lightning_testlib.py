"""Shared by the Lightning tests: batches from the tiny tokenizer, a LightningModule around the tiny
Hugging Face Llama for each Lightning package, and reference losses computed by transformers itself.

(No ``__init__.py`` in this folder: the package would be named ``lightning`` and shadow the real one.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as L
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer

from plw_plugins import collate_conversations, tokenize_conversation
from plw_plugins.integrations.lightning import PromptLossWeightMixin
from plw_plugins.masks import IGNORE_INDEX

PROMPTS = [
    "### Instruction:\nAdd the two numbers and answer with the sum only. What is 41 plus 17?\n\n### Response:\n",
    "### Instruction:\nClassify the sentiment: the garden was lovely.\n\n### Response:\n",
    "### Instruction:\nList the numbers from 3 to 9.\n\n### Response:\n",
    "### Instruction:\nSort these words alphabetically: river, apple, stone, light, candle, bridge.\n\n### Response:\n",
    "### Instruction:\nIs 4412 even or odd?\n\n### Response:\n",
]
COMPLETIONS = ["58", "positive", "3, 4, 5, 6, 7, 8, 9", "apple, bridge, candle, light, river, stone", "even"]


# Chat rows for the role tests: a system prompt, user turns, a tool result, two assistant turns, and
# one row with per-message weights.
SYSTEM = {"role": "system", "content": "You are a careful calculator. Answer with the number only."}
CONVERSATIONS = [
    [
        SYSTEM,
        {"role": "user", "content": "What is 41 plus 17?"},
        {"role": "assistant", "content": "58"},
        {"role": "tool", "content": "calculator: 41 + 17 = 58"},
        {"role": "user", "content": "And 58 minus 9?"},
        {"role": "assistant", "content": "49"},
    ],
    [SYSTEM, {"role": "user", "content": "Is 4412 even or odd?"}, {"role": "assistant", "content": "even"}],
    [
        {**SYSTEM, "weight": 0.0},
        {"role": "user", "content": "List the numbers from 3 to 6.", "weight": 0.5},
        {"role": "assistant", "content": "3, 4, 5, 6", "weight": 0.25},
        {"role": "user", "content": "Now from 7 to 9."},
        {"role": "assistant", "content": "7, 8, 9", "weight": 1.0},
    ],
]
ROLE_KEYS: dict[str, Any] = dict(
    prompt_loss_weight=0.2, completion_loss_weight=0.5, system_loss_weight=0.0, tool_loss_weight=0.3,
    template_loss_weight=0.05, history_loss_weight=0.6, loss_normalization="token_count",
)
"""Every role key set, each to a value of its own."""


def make_chat_batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    """CONVERSATIONS in one batch, tokenized with the tokenizer's chat template (roles and message weights)."""
    rows = [tokenize_conversation(messages, tokenizer, row=i) for i, messages in enumerate(CONVERSATIONS)]
    return collate_conversations(rows, tokenizer.pad_token_id)


def rows_of(batch: dict[str, torch.Tensor], rows: slice) -> dict[str, torch.Tensor]:
    """Rows ``rows`` of a batch, every key."""
    return {key: value[rows] for key, value in batch.items()}


def encode(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """``bos prompt completion eos`` and its labels, ``-100`` on the prompt."""
    prompt_ids = [tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    completion_ids = [*tokenizer(completion, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    return prompt_ids + completion_ids, [IGNORE_INDEX] * len(prompt_ids) + completion_ids


def make_batch(tokenizer: Any, rows: list[int], *, length: Optional[int] = None) -> dict[str, torch.Tensor]:
    """Rows ``rows`` of PROMPTS/COMPLETIONS, right-padded to ``length`` (default: the longest row)."""
    encoded = [encode(tokenizer, PROMPTS[r], COMPLETIONS[r]) for r in rows]
    length = length or max(len(ids) for ids, _ in encoded)
    batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": []}
    for ids, labels in encoded:
        padding = length - len(ids)
        batch["input_ids"].append(ids + [tokenizer.pad_token_id] * padding)
        batch["labels"].append(labels + [IGNORE_INDEX] * padding)
        batch["attention_mask"].append([1] * len(ids) + [0] * padding)
    return {key: torch.tensor(value) for key, value in batch.items()}


# Two data-parallel ranks with very different token counts: per-rank normalisation would be wrong.
RANK_ROWS = [[0, 1, 3], [4]]


# Two micro-batches per rank for the accumulation test: four different weight sums.
RANK_MICRO_BATCH_ROWS = [[[0, 1], [3]], [[4], [2, 1, 0]]]


def rank_batches(tokenizer: Any) -> list[dict[str, torch.Tensor]]:
    """One batch per rank of RANK_ROWS, all padded to one length so that they concatenate."""
    return padded_batches(tokenizer, RANK_ROWS)


def rank_micro_batches(tokenizer: Any) -> list[list[dict[str, torch.Tensor]]]:
    """The micro-batches of each rank of RANK_MICRO_BATCH_ROWS, all padded to one length."""
    flat = padded_batches(tokenizer, [rows for rank in RANK_MICRO_BATCH_ROWS for rows in rank])
    per_rank = len(RANK_MICRO_BATCH_ROWS[0])
    return [flat[i : i + per_rank] for i in range(0, len(flat), per_rank)]


def padded_batches(tokenizer: Any, groups: list[list[int]]) -> list[dict[str, torch.Tensor]]:
    """One batch per group of PROMPTS rows, all padded to one length so that they concatenate."""
    length = max(len(encode(tokenizer, PROMPTS[r], COMPLETIONS[r])[0]) for rows in groups for r in rows)
    return [make_batch(tokenizer, rows, length=length) for rows in groups]


def concatenated(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The batches of ``padded_batches`` as one batch."""
    return {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def load_tokenizer(model_dir: str | Path) -> Any:
    return AutoTokenizer.from_pretrained(str(model_dir))


def load_model(model_dir: str | Path) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    return model.train()


def loader(batches: list[dict[str, torch.Tensor]]) -> DataLoader:
    """Each item is already a batch."""
    return DataLoader(batches, batch_size=None, shuffle=False)


def prompt_labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Labels that train exactly the prompt tokens: masked labels inside the attention mask."""
    is_prompt = (batch["labels"] == IGNORE_INDEX) & (batch["attention_mask"] > 0)
    return torch.where(is_prompt, batch["input_ids"], IGNORE_INDEX)


def all_token_labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Labels that train every real token (train on inputs)."""
    return torch.where(batch["attention_mask"] > 0, batch["input_ids"], IGNORE_INDEX)


def token_counts(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(prompt targets, completion targets) after the causal shift."""
    return int((prompt_labels(batch)[:, 1:] != IGNORE_INDEX).sum()), int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def hf_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """transformers' masked cross-entropy (mean over the labels that are not -100)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss


def reference_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], plw: float) -> torch.Tensor:
    """``(S_completion + plw * S_prompt) / (n_completion + plw * n_prompt)`` from transformers' two mean
    losses; independent of plw_plugins."""
    n_prompt, n_completion = token_counts(batch)
    completion_sum = hf_loss(model, batch, batch["labels"]) * n_completion
    prompt_sum = hf_loss(model, batch, prompt_labels(batch)) * n_prompt
    return (completion_sum + plw * prompt_sum) / (n_completion + plw * n_prompt)


def gradients(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def assert_gradients_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], **tolerance: float) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], msg=lambda m, name=name: f"{name}: {m}", **tolerance)


def max_gradient_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[name] - b[name]).abs().max()) for name in a)


class _TinyLMBody:
    """The tiny Llama fine-tuned with SGD; records its step and validation losses and the gradients of its first step.

    Args:
        model_dir: the saved tiny Llama.
        mode: how the loss is computed: ``output`` (the CausalLMOutput), ``logits`` (a tensor),
            ``lean`` (body output plus ``lm_head``), ``hidden_without_head`` (a mistake: hidden states
            without the head), ``plain`` (the model's own loss: never calls the helper).
        learning_rate: SGD's learning rate (0 keeps the weights fixed).
        rows: for LightningCLI runs: the PROMPTS rows of the built-in train and val batches.
    """

    def __init__(self, model_dir: str, mode: str = "output", learning_rate: float = 0.0, rows: int = 0) -> None:
        super().__init__()
        self.model = load_model(model_dir)
        self.model_dir, self.mode, self.learning_rate, self.rows = model_dir, mode, learning_rate, rows
        self.step_losses: list[float] = []
        self.val_losses: list[float] = []
        self.first_gradients: Optional[dict[str, torch.Tensor]] = None

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if self.mode == "plain":
            return self.model(**inputs, labels=batch["labels"]).loss
        if self.mode == "lean":
            return self.prompt_weighted_loss(self.model.model(**inputs), batch, lm_head=self.model.lm_head)
        if self.mode == "hidden_without_head":
            return self.prompt_weighted_loss(self.model.model(**inputs), batch)
        output = self.model(**inputs)
        return self.prompt_weighted_loss(output.logits if self.mode == "logits" else output, batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.step_losses.append(float(loss.detach()))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.val_losses.append(float(loss.detach()))
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.first_gradients is None:
            self.first_gradients = {n: p.grad.detach().clone() for n, p in self.model.named_parameters()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.learning_rate)

    def train_dataloader(self) -> DataLoader:
        tokenizer = load_tokenizer(self.model_dir)
        return loader([make_batch(tokenizer, [r % len(PROMPTS)]) for r in range(self.rows)])

    def val_dataloader(self) -> DataLoader:
        tokenizer = load_tokenizer(self.model_dir)
        return loader([make_batch(tokenizer, [0, 2]), make_batch(tokenizer, [4])])


class TinyLM(_TinyLMBody, PromptLossWeightMixin, L.LightningModule):
    __doc__ = _TinyLMBody.__doc__


class TinyLMClassic(_TinyLMBody, PromptLossWeightMixin, pl.LightningModule):
    __doc__ = _TinyLMBody.__doc__


class TinyLMWithoutMixin(_TinyLMBody, L.LightningModule):
    """The same module without PromptLossWeightMixin (a mistake)."""


TRAINER_DEFAULTS: dict[str, Any] = dict(
    accelerator="cpu",
    devices=1,
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


def trainer(trainer_class: type = L.Trainer, **overrides: Any) -> Any:
    return trainer_class(**{**TRAINER_DEFAULTS, **overrides})
