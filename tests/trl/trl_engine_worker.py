"""One optimiser step of PLWSFTTrainer per (path, prompt loss weight) under one engine on 2 CPU processes.

Usage (under torchrun): python trl_engine_worker.py ENGINE MODEL_DIR OUTPUT_DIR PATH[,PATH...]
ENGINE is a key of ``ENGINES``; PATH is ``fused`` (TRL's fused LM head, TRL >= 1.16) or ``lean`` (the
core's loss from the hidden state). Rank 0 saves the full parameters after each step to
OUTPUT_DIR/PATH-PLW.pt. Run by test_trl_engines.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the CPU engine shim
from cpu_engines import allow_fsdp_and_deepspeed_on_cpu, full_parameters  # noqa: E402
from trl_harness import train_one_step  # noqa: E402

from plw_plugins.cli.builtin_data import instruction_rows  # noqa: E402

PROMPT_LOSS_WEIGHTS = (0.0, 0.1, 1.0)
ROWS = 4


def zero(stage: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True, "zero_optimization": {"stage": stage},
    }
    if stage == 3:  # partition every parameter of the tiny model, and gather them for the saved state
        config["zero_optimization"].update(stage3_param_persistence_threshold=0, stage3_gather_16bit_weights_on_model_save=True)
    return {"deepspeed": config}


def fsdp(version: int, wrap: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {"fsdp_version": version, "transformer_layer_cls_to_wrap": wrap}
    if version == 1:
        config.update(sync_module_states=False, use_orig_params=True)
    return {"fsdp": "full_shard", "fsdp_config": config}


ENGINES: dict[str, dict[str, Any]] = {
    "fsdp1": fsdp(1, ["LlamaDecoderLayer"]),
    "fsdp2": fsdp(2, ["LlamaDecoderLayer"]),
    # Every nn.Linear its own unit: the LM head is sharded on its own, outside the root unit.
    "fsdp2_lm_head_unit": fsdp(2, ["LlamaDecoderLayer", "Linear"]),
    "zero2": zero(2),
    "zero3": zero(3),
}


def main(engine: str, model_dir: str, output_dir: str, paths: str) -> None:
    allow_fsdp_and_deepspeed_on_cpu()
    output = Path(output_dir)
    for path in paths.split(","):
        for plw in PROMPT_LOSS_WEIGHTS:
            trainer = train_one_step(
                Path(model_dir), instruction_rows(ROWS), output / f"run-{path}-{plw}", plw=plw,
                per_device_train_batch_size=ROWS // 2, ddp_backend="gloo", **ENGINES[engine],
                configure=lambda trainer: setattr(trainer, "plw_fused_lm_head", path == "fused"),
            )
            assert trainer.accelerator.num_processes == 2
            kind = trainer.accelerator.distributed_type.value
            state = full_parameters(trainer)
            if state is not None:
                torch.save({"parameters": state, "distributed_type": kind}, output / f"{path}-{plw}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:5])
