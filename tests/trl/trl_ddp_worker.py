"""One optimiser step of PLWSFTTrainer, run by test_trl_ddp.py alone or under torchrun with gloo.

Usage: python trl_ddp_worker.py MODEL_DIR OUTPUT_FILE PER_DEVICE_BATCH ACCUMULATION [chat]
With ``chat``: conversations with role weights and per-message weights (``CHAT_KEYS``). Rank 0 saves the parameters after the step and the training log to OUTPUT_FILE.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from trl_harness import chat_rows, train_one_step

from plw_plugins.cli.builtin_data import instruction_rows

PROMPT_LOSS_WEIGHT = 0.3
CHAT_KEYS = {"assistant_only_loss": True, "max_length": 256, "system_loss_weight": 0.0, "template_loss_weight": 0.1,
             "history_loss_weight": 0.5}


def main(model_dir: str, output_file: str, batch: int, accumulation: int, data: str = "instructions") -> None:
    distributed = {"ddp_backend": "gloo"} if int(os.environ.get("WORLD_SIZE", "1")) > 1 else {}
    rows, keys = (chat_rows(4), CHAT_KEYS) if data == "chat" else (instruction_rows(4), {})
    trainer = train_one_step(
        Path(model_dir), rows, Path(output_file).parent / "run", plw=PROMPT_LOSS_WEIGHT,
        per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, **distributed, **keys,
    )
    if trainer.accelerator.is_main_process:
        state = {name: p.detach().clone() for name, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters()}
        logs = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
        torch.save({"parameters": state, "logs": logs, "world_size": trainer.accelerator.num_processes}, output_file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:])
