"""A Hugging Face causal LM fine-tuned inside a LightningModule with the prompt loss weight, and a
data module of prompt-completion rows (the package's built-in data, or an Alpaca JSON file).

Used by ``train.py`` (plain Python) and ``cli.py`` (LightningCLI with ``config.yaml``).
"""

from __future__ import annotations

import json
from typing import Optional

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer

from plw_plugins.cli.builtin_data import PROMPT_TEMPLATE, instruction_rows, pad_examples, tokenize_prompt_completion
from plw_plugins.integrations.lightning import PromptLossWeightMixin


class CausalLMModule(PromptLossWeightMixin, L.LightningModule):
    """Fine-tunes ``model_path``; the loss comes from ``self.prompt_weighted_loss``.

    Args:
        model_path: a local folder with a Hugging Face causal LM.
        learning_rate: AdamW's learning rate.
        lean: compute the loss from the last hidden states and the LM head, never holding the full logits.
    """

    def __init__(self, model_path: str, learning_rate: float = 1e-4, lean: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        self.model.train()  # from_pretrained returns it in eval mode, and Lightning keeps modules' modes
        self.lean = lean

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if self.lean:
            # The body's output holds the last hidden states; the LM head is applied chunk by chunk.
            return self.prompt_weighted_loss(self.model.model(**inputs), batch, lm_head=self.model.lm_head)
        # No labels to the model: the loss is the prompt-weighted one, not the model's own.
        return self.prompt_weighted_loss(self.model(**inputs), batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._loss(batch)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._loss(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.learning_rate)


class InstructionDataModule(L.LightningDataModule):
    """Prompt-completion rows tokenized as ``bos prompt completion eos``, labels ``-100`` on the prompt.

    Args:
        tokenizer_path: a local folder with the model's tokenizer.
        data_path: an Alpaca-format JSON file (``instruction``, ``input``, ``output``); the package's
            built-in instruction data when not given.
        train_rows: rows to train on.
        val_rows: rows to validate on (taken after the training rows).
        batch_size: rows per batch.
        max_length: tokens per row, longer rows are cut.
    """

    def __init__(
        self,
        tokenizer_path: str,
        data_path: Optional[str] = None,
        train_rows: int = 256,
        val_rows: int = 32,
        batch_size: int = 8,
        max_length: int = 256,
    ) -> None:
        super().__init__()
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        self.data_path = data_path
        self.train_rows, self.val_rows = train_rows, val_rows
        self.batch_size, self.max_length = batch_size, max_length

    def _rows(self) -> list[dict[str, str]]:
        count = self.train_rows + self.val_rows
        if self.data_path is None:
            return instruction_rows(count)
        with open(self.data_path) as file:
            alpaca = json.load(file)[:count]
        return [
            {"prompt": PROMPT_TEMPLATE.format(instruction="\n".join(filter(None, (row["instruction"], row["input"])))),
             "completion": row["output"]}
            for row in alpaca
        ]

    def setup(self, stage: str) -> None:
        examples = [tokenize_prompt_completion(row, self.tokenizer, self.max_length) for row in self._rows()]
        self.train_set, self.val_set = examples[: self.train_rows], examples[self.train_rows :]

    def _collate(self, examples: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        return pad_examples(examples, self.tokenizer.pad_token_id)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, collate_fn=self._collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, collate_fn=self._collate)
