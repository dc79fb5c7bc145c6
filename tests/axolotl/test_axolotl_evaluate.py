"""``axolotl evaluate`` with the plugin: the training set's prompt and completion losses come out
under ``train_``, the validation set's under ``eval_``, each over its own tokens, so that Axolotl's
``eval_summary.csv`` (which strips those prefixes) has one row per metric with both columns.
Checked against stock ``axolotl evaluate`` with ``train_on_inputs: false``."""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor

import pytest
from axolotl_harness import CHAT, plugin, run_axolotl, write_config

# Eight rows per set and a batch of eight: each set is one batch, so Axolotl's own loss (a mean of
# batch means) is the token mean that the completion loss must equal at weight 0.
EVALUATE = {
    "chat_template": "tokenizer_default", "sequence_len": 256, "val_set_size": 0.5,
    "micro_batch_size": 8, "eval_batch_size": 8,
}


def summary(run_dir) -> dict[str, tuple[str, str]]:
    """``eval_summary.csv``: metric -> (training, validation)."""
    with open(run_dir / "out" / "eval_summary.csv") as file:
        return {row["metric"]: (row["training"], row["validation"]) for row in csv.DictReader(file)}


@pytest.fixture(scope="module")
def summaries(tmp_path_factory, tiny_model_dir, chat_jsonl):
    configs = {"stock": {"train_on_inputs": False}, "plw": plugin(0.0)}
    root = tmp_path_factory.mktemp("axolotl-evaluate")
    paths = {}
    for name, overrides in configs.items():
        (root / name).mkdir()
        paths[name] = write_config(root / name, tiny_model_dir, {**CHAT, "path": str(chat_jsonl)}, {**EVALUATE, **overrides})
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = dict(zip(paths, pool.map(lambda path: run_axolotl(path, command="evaluate"), paths.values())))
    for name, run in runs.items():
        assert run.returncode == 0, f"axolotl evaluate ({name}) failed:\n{run.output[-6000:]}"
    return {name: summary(path.parent) for name, path in paths.items()}


def test_each_set_reports_under_its_own_prefix(summaries):
    rows = summaries["plw"]
    for metric in ("prompt_loss", "completion_loss", "loss"):
        training, validation = (float(value) for value in rows[metric])
        assert training > 0 and validation > 0, metric
    assert not any(metric.startswith(("eval_", "train_")) for metric in rows), sorted(rows)


def test_completion_loss_is_stock_axolotls_loss_of_each_set(summaries):
    """At weight 0 the completion loss of each set is the stock completion-only loss of that set:
    a leak of the training set's tokens into the validation set's would change it."""
    stock, plw = summaries["stock"], summaries["plw"]
    training, validation = (float(value) for value in plw["completion_loss"])
    assert training == pytest.approx(float(stock["loss"][0]), rel=1e-5)
    assert validation == pytest.approx(float(stock["loss"][1]), rel=1e-5)
    assert training != pytest.approx(validation, rel=1e-5)
