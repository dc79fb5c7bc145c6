"""The logged prompt and completion losses are means over an epoch's tokens, not over its batches."""

from __future__ import annotations

import csv

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from plw_lightning_testlib import TinyLM, hf_loss, load_model, load_tokenizer, loader, make_batch, prompt_labels, token_counts, trainer

from plw_plugins.integrations.lightning import PromptLossWeight


def logged(logger: CSVLogger) -> dict[str, list[float]]:
    """Every value of every metric in the CSV log."""
    with open(f"{logger.log_dir}/metrics.csv") as file:
        rows = list(csv.DictReader(file))
    return {key: [float(row[key]) for row in rows if row[key]] for key in rows[0]}


def test_epoch_metrics_are_token_weighted(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(tiny_model_dir)
    batches = [make_batch(tokenizer, [0, 1, 3]), make_batch(tokenizer, [4])]  # many tokens, then few
    logger = CSVLogger(tmp_path)
    module = TinyLM(str(tiny_model_dir), learning_rate=0.0)  # weights fixed: every batch scored by one model
    trainer(max_epochs=1, logger=logger, log_every_n_steps=1, callbacks=[PromptLossWeight(prompt_loss_weight=0.2)]).fit(
        module, train_dataloaders=loader(batches), val_dataloaders=loader(batches)
    )

    reference = load_model(tiny_model_dir)
    metrics = logged(logger)
    with torch.no_grad():
        for name, labels_of, count_of in (
            ("prompt_loss", prompt_labels, lambda b: token_counts(b)[0]),
            ("completion_loss", lambda b: b["labels"], lambda b: token_counts(b)[1]),
        ):
            means = [float(hf_loss(reference, b, labels_of(b))) for b in batches]
            counts = [count_of(b) for b in batches]
            token_mean = sum(m * n for m, n in zip(means, counts)) / sum(counts)
            batch_mean = sum(means) / len(means)
            assert abs(token_mean - batch_mean) > 0.01, "the batches must tell the two means apart"
            for stage in ("train", "val"):
                assert metrics[f"{stage}/{name}"] == [pytest.approx(token_mean, rel=1e-5)], (stage, name)
    assert metrics["train/prompt_loss_weight"] == [pytest.approx(0.2)] * len(batches)


def test_lean_path_at_plw_0_logs_no_prompt_loss(tiny_model_dir):
    """Documented: the lean path does not score prompt tokens it does not train on."""
    batch = make_batch(load_tokenizer(tiny_model_dir), [0, 4])
    fit = trainer(max_epochs=1, callbacks=[PromptLossWeight(prompt_loss_weight=0.0)])
    fit.fit(TinyLM(str(tiny_model_dir), mode="lean"), train_dataloaders=loader([batch]))
    with torch.no_grad():
        expected = hf_loss(load_model(tiny_model_dir), batch, batch["labels"])
    assert float(fit.logged_metrics["train/completion_loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert "train/prompt_loss" not in fit.logged_metrics
