"""Real ``axolotl train`` runs on CPU, offline, with the tiny local models and local JSONL data.

An Axolotl run takes 20-30 s to start, so every run the tests need is declared once in ``RUNS``
and started, two at a time, the first time any test asks for one; tests then read the results.
Each run saves a checkpoint at its last step, whose ``trainer_state.json`` holds the logs at full
precision (the console shows four digits).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLUGIN = "plw_plugins.integrations.axolotl.PromptLossWeightPlugin"
LIGER = "axolotl.integrations.liger.LigerPlugin"
AXOLOTL = Path(sys.executable).with_name("axolotl")
RUN_TIMEOUT_S = 600

BASE_CONFIG: dict[str, Any] = {
    "tokenizer_type": "AutoTokenizer",
    "sequence_len": 2048,
    "sample_packing": False,
    "micro_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_steps": 1,
    "num_epochs": 1,
    "learning_rate": 1e-3,
    "optimizer": "adamw_torch",
    "lr_scheduler": "constant",
    "bf16": False,
    "fp16": False,
    "tf32": False,
    "attn_implementation": "sdpa",
    "val_set_size": 0,
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 1,
    "seed": 42,
    "dataloader_num_workers": 0,
    "dataset_num_proc": 1,
}

ALPACA = {"type": "alpaca", "ds_type": "json"}
CHAT = {"type": "chat_template", "ds_type": "json", "field_messages": "messages"}


def plugin(prompt_loss_weight: float, **keys: Any) -> dict[str, Any]:
    return {"plugins": [PLUGIN], "prompt_loss_weight": prompt_loss_weight, **keys}


ACCUMULATED = {"micro_batch_size": 2, "gradient_accumulation_steps": 2}
"""The four rows of one optimiser step as two micro-batches of two."""

# Name -> (model fixture, dataset fixture, config overrides). The alpaca runs read 4 real
# Toolformer rows, so that one optimiser step sees the whole dataset whatever the batch layout:
# runs that differ only in layout must then log the same first-step loss and gradient norm.
RUNS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "stock_masked": ("pad_is_eos", "alpaca", {"train_on_inputs": False}),
    "stock_all_tokens": ("pad_is_eos", "alpaca", {"train_on_inputs": True}),
    "plw_0": ("pad_is_eos", "alpaca", plugin(0.0)),
    "plw_1": ("pad_is_eos", "alpaca", plugin(1.0)),
    "plw_1_packed": ("pad_is_eos", "alpaca", {**plugin(1.0), "sample_packing": True, "micro_batch_size": 1}),
    "plw_0.3": ("pad_is_eos", "alpaca", plugin(0.3)),
    "plw_0.3_accumulated": ("pad_is_eos", "alpaca", {**plugin(0.3), **ACCUMULATED}),
    "plw_0_accumulated": ("pad_is_eos", "alpaca", {**plugin(0.0), **ACCUMULATED}),
    "stock_masked_accumulated": ("pad_is_eos", "alpaca", {"train_on_inputs": False, **ACCUMULATED}),
    "plw_0.3_liger_fused_loss": (
        "pad_is_eos", "alpaca", {**plugin(0.3), "plugins": [PLUGIN, LIGER], "liger_fused_linear_cross_entropy": True},
    ),
    "chat_packed_eval": (
        "own_pad", "chat",
        {
            **plugin(0.1), "chat_template": "tokenizer_default", "sequence_len": 256, "sample_packing": True,
            "micro_batch_size": 1, "max_steps": 2, "val_set_size": 0.5, "eval_strategy": "steps", "eval_steps": 2,
            "save_steps": 2,
        },
    ),
    "invalid_weight": ("own_pad", "alpaca", plugin(1.5)),
}


@dataclass
class AxolotlRun:
    """What one ``axolotl train`` left behind."""

    returncode: int
    output: str
    log_history: list[dict[str, Any]]

    def check(self) -> AxolotlRun:
        assert self.returncode == 0, f"axolotl train failed ({self.returncode}):\n{self.output[-6000:]}"
        return self

    def step(self, number: int) -> dict[str, Any]:
        """The training log of optimiser step ``number``."""
        return next(log for log in self.check().log_history if log.get("step") == number and "loss" in log)

    def eval_logs(self) -> list[dict[str, Any]]:
        return [log for log in self.check().log_history if "eval_loss" in log]


def write_config(path: Path, model_dir: Path, dataset: dict[str, Any], overrides: dict[str, Any]) -> Path:
    """A complete Axolotl YAML (JSON is valid YAML) for a local model and dataset."""
    config = {
        **BASE_CONFIG,
        "base_model": str(model_dir),
        "datasets": [dataset],
        "output_dir": str(path / "out"),
        "dataset_prepared_path": str(path / "prepared"),
        **overrides,
    }
    config_path = path / "config.yml"
    config_path.write_text(json.dumps(config, indent=2))
    return config_path


def run_axolotl(config_path: Path, *, threads: int = 1, command: str = "train") -> AxolotlRun:
    """``axolotl COMMAND CONFIG --launcher python`` (``train`` or ``evaluate``) in a fresh process, offline."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
        "WANDB_MODE": "disabled",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(threads),
    }
    process = subprocess.run(
        [str(AXOLOTL), command, str(config_path), "--launcher", "python"],
        cwd=config_path.parent, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    states = sorted((config_path.parent / "out").glob("checkpoint-*/trainer_state.json"))
    history = json.loads(states[-1].read_text())["log_history"] if states else []
    return AxolotlRun(process.returncode, process.stdout + process.stderr, history)


class AxolotlRuns:
    """Starts every run of ``RUNS`` on first use, two at a time; ``get`` waits for one."""

    def __init__(self, root: Path, models: dict[str, Path], datasets: dict[str, Path]) -> None:
        self.root, self.models, self.datasets = root, models, datasets
        self._futures: dict[str, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=2)

    def get(self, name: str) -> AxolotlRun:
        if not self._futures:
            for run_name in RUNS:
                self._futures[run_name] = self._pool.submit(self._run, run_name)
        return self._futures[name].result()

    def _run(self, name: str) -> AxolotlRun:
        model, dataset, overrides = RUNS[name]
        kind = ALPACA if dataset == "alpaca" else CHAT
        path = self.root / name
        path.mkdir()
        config = write_config(path, self.models[model], {**kind, "path": str(self.datasets[dataset])}, overrides)
        return run_axolotl(config)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)
