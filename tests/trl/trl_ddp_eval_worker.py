"""Evaluation of PLWSFTTrainer on 5 rows, run by test_trl_eval_metrics.py alone or under torchrun with gloo.

Usage: python trl_ddp_eval_worker.py MODEL_DIR OUTPUT_FILE PER_DEVICE_EVAL_BATCH
Rank 0 saves the metrics ``evaluate`` returned to OUTPUT_FILE.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl_harness import training_args

from plw_plugins.cli.builtin_data import instruction_rows
from plw_plugins.integrations.trl import PLWSFTConfig, PLWSFTTrainer


def main(model_dir: str, output_file: str, batch: int) -> None:
    distributed = {"ddp_backend": "gloo"} if int(os.environ.get("WORLD_SIZE", "1")) > 1 else {}
    args = training_args(
        PLWSFTConfig, Path(output_file).parent / "run", prompt_loss_weight=0.1, per_device_eval_batch_size=batch,
        **distributed,
    )
    trainer = PLWSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), args=args,
        train_dataset=Dataset.from_list(instruction_rows(4)), processing_class=AutoTokenizer.from_pretrained(model_dir),
        eval_dataset={"a": Dataset.from_list(instruction_rows(5, seed=1))},  # 5 rows: uneven over 2 ranks
    )
    metrics = trainer.evaluate()
    if trainer.accelerator.is_main_process:
        torch.save({"metrics": metrics, "world_size": trainer.accelerator.num_processes}, output_file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
