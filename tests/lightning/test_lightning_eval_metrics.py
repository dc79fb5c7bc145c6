"""Validation and test metrics with the real Lightning ``Trainer``: ``val/`` and ``test/`` prefixes,
one token-weighted pair per dataloader under Lightning's ``/dataloader_idx_{i}`` suffix, and each
call reporting only its own tokens; against transformers' own masked losses."""

from __future__ import annotations

import pytest
import torch
from plw_lightning_testlib import TinyLM, hf_loss, load_model, load_tokenizer, loader, make_batch, prompt_labels, token_counts, trainer

from plw_plugins.integrations.lightning import PromptLossWeight


class TinyLMMultiEval(TinyLM):
    """The tiny module with the step signatures Lightning requires for several dataloaders."""

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        return self._loss(batch)

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        return self._loss(batch)


def expected_means(model_dir, batches) -> dict[str, float]:
    """Token-weighted prompt and completion NLL over ``batches``, from transformers' mean losses."""
    reference = load_model(model_dir)
    means = {}
    with torch.no_grad():
        for name, labels_of, index in (("prompt_loss", prompt_labels, 0), ("completion_loss", lambda b: b["labels"], 1)):
            sums = [float(hf_loss(reference, b, labels_of(b))) * token_counts(b)[index] for b in batches]
            means[name] = sum(sums) / sum(token_counts(b)[index] for b in batches)
    return means


@pytest.fixture(scope="module")
def dataloader_batches(tiny_model_dir):
    """Two dataloaders, each with a long and a short batch (token weighting differs from batch weighting)."""
    tokenizer = load_tokenizer(tiny_model_dir)
    return [
        [make_batch(tokenizer, [0, 1, 3]), make_batch(tokenizer, [4])],
        [make_batch(tokenizer, [2]), make_batch(tokenizer, [1, 3])],
    ]


@pytest.mark.parametrize("stage", ["val", "test"])
def test_each_dataloader_is_reported_separately(stage, dataloader_batches, tiny_model_dir):
    expected = [expected_means(tiny_model_dir, batches) for batches in dataloader_batches]
    # (A random tiny model: losses sit near log(vocab), so the two sets differ by about 1e-4.)
    assert expected[0]["prompt_loss"] != pytest.approx(expected[1]["prompt_loss"], rel=5e-5)
    run = trainer(callbacks=[PromptLossWeight(prompt_loss_weight=0.2)])
    module = TinyLMMultiEval(str(tiny_model_dir))
    call = run.validate if stage == "val" else run.test
    results = call(module, dataloaders=[loader(batches) for batches in dataloader_batches], verbose=False)

    assert len(results) == 2
    for index, means in enumerate(expected):
        for name, value in means.items():
            key = f"{stage}/{name}/dataloader_idx_{index}"
            assert results[index][key] == pytest.approx(value, rel=1e-5), key
            assert float(run.logged_metrics[key]) == pytest.approx(value, rel=1e-5), key
    assert f"{stage}/prompt_loss" not in run.logged_metrics


def test_each_call_reports_only_its_own_tokens(dataloader_batches, tiny_model_dir):
    """A validation with one dataloader after one with two, then a test: no suffix, no carry-over."""
    run = trainer(callbacks=[PromptLossWeight(prompt_loss_weight=0.2)])
    module = TinyLMMultiEval(str(tiny_model_dir))
    run.validate(module, dataloaders=[loader(batches) for batches in dataloader_batches], verbose=False)
    second, first = dataloader_batches[1], dataloader_batches[0]
    (validated,) = run.validate(module, dataloaders=loader(second), verbose=False)
    (tested,) = run.test(module, dataloaders=loader(first), verbose=False)
    for name, value in expected_means(tiny_model_dir, second).items():
        assert validated[f"val/{name}"] == pytest.approx(value, rel=1e-5), name
    for name, value in expected_means(tiny_model_dir, first).items():
        assert tested[f"test/{name}"] == pytest.approx(value, rel=1e-5), name
    assert not any("dataloader_idx" in key for key in [*validated, *tested])
