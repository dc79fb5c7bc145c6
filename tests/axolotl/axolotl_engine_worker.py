"""One optimiser step of Axolotl's own training entry with the PLW plugin, per prompt loss weight,
under one engine on 2 CPU processes (or ``single``: one process over every row).

Usage (under torchrun, or plain python for ``single``):
    python axolotl_engine_worker.py ENGINE MODEL_DIR DATA_JSONL OUTPUT_DIR
ENGINE is a key of ``ENGINES`` or ``single``. For each weight of ``PROMPT_LOSS_WEIGHTS`` it writes an
Axolotl YAML, loads it with ``axolotl.cli.config.load_cfg`` and runs ``axolotl.cli.train.do_train``
(what ``axolotl train`` runs), so Axolotl's config validation, environment set-up, trainer builder and
the plugin's ``PromptLossWeightAxolotlTrainer`` all take part. Rank 0 saves the full parameters after
the step to OUTPUT_DIR/PLW.pt. Run by test_axolotl_engines.py.

Besides the CPU engine shim (tests/cpu_engines.py), this worker runs accelerate's process state on
gloo, as the TRL engine tests do with ``TrainingArguments(use_cpu=True)``: Axolotl has no ``use_cpu``
key, and a process state made without ``cpu=True`` on a machine without a GPU is not distributed. It
makes the first ``PartialState`` itself, before Axolotl makes one, and patches:
- ``TrainingArguments.__post_init__``: sets ``use_cpu=True`` and ``ddp_backend="gloo"`` on the
  arguments Axolotl's trainer builder makes, before they set up the process state.
- ``accelerate``'s ``ParallelismConfig.build_device_mesh``: Axolotl builds the FSDP device mesh for
  ``"cuda"`` (``axolotl.utils.distributed.build_parallelism_config``); on CPU processes it is built
  for ``"cpu"`` instead, over the same ranks and dimensions.
- the loaded config's ``device_map``, cleared: Axolotl maps each rank to device ``LOCAL_RANK``, a
  GPU index (FSDP ignores it; DeepSpeed does not).
Of ``axolotl.train``:
- ``execute_training``: after Axolotl's ``trainer.train()``, gather every parameter whole (a collective
  under FSDP and ZeRO-3) and save it; this is what the test compares.
- ``save_trained_model``: skipped; saving the final model is not under test, and accelerate's FSDP1
  full state dict offloads to CPU through a clone that crashes on CPU-only processes.
- ``cleanup_distributed``: skipped, so that the three weights run one after another in one launch
  over the same process group (Axolotl tears it down at the end of each run); for the same reason
  Axolotl's record of its process state (``axolotl.utils.distributed.distributed_state``) is cleared
  before each run, as its DeepSpeed set-up insists on finding none.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the CPU engine shim
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/axolotl: the harness
from axolotl_harness import ALPACA, BASE_CONFIG, PLUGIN  # noqa: E402
from cpu_engines import allow_fsdp_and_deepspeed_on_cpu, full_parameters  # noqa: E402

PROMPT_LOSS_WEIGHTS = (0.0, 0.1, 1.0)
ROWS = 4
LEARNING_RATE = 10.0
"""Plain SGD at a large rate, so one step moves the parameters far above the comparison's tolerance."""

STEP_CONFIG: dict[str, Any] = {
    "optimizer": "sgd", "learning_rate": LEARNING_RATE, "lr_scheduler": "constant", "warmup_steps": 0,
    "weight_decay": 0.0, "max_grad_norm": 0.0, "save_strategy": "no", "save_steps": None,
}


def zero(stage: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True, "zero_optimization": {"stage": stage},
    }
    if stage == 3:  # partition every parameter of the tiny model
        config["zero_optimization"].update(stage3_param_persistence_threshold=0, stage3_gather_16bit_weights_on_model_save=True)
    return config


def fsdp(version: int, wrap: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "transformer_layer_cls_to_wrap": wrap,
        "state_dict_type": "FULL_STATE_DICT",
    }
    if version == 1:  # full sharding, FSDP1's default
        config.update(sync_module_states=False, use_orig_params=True)
    else:
        config.update(reshard_after_forward=True)
    return {"fsdp_version": version, "fsdp_config": config}


ENGINES: dict[str, dict[str, Any]] = {
    "fsdp1": fsdp(1, "LlamaDecoderLayer"),
    "fsdp2": fsdp(2, "LlamaDecoderLayer"),
    # Every nn.Linear its own unit: the LM head is sharded on its own, outside the root unit.
    "fsdp2_lm_head_unit": fsdp(2, "LlamaDecoderLayer,Linear"),
    "zero2": {"deepspeed": zero(2)},
    "zero3": {"deepspeed": zero(3)},
}


def write_config(path: Path, engine: str, model_dir: str, data: str, plw: float) -> Path:
    """The Axolotl YAML (JSON is valid YAML) of one run; DeepSpeed's config goes in a file of its own.
    Every rank writes its own files (the same text): one rank must never read a file another is writing."""
    path.mkdir(parents=True, exist_ok=True)
    rank = os.environ.get("RANK", "0")
    engine_keys = dict(ENGINES.get(engine, {}))
    if "deepspeed" in engine_keys:
        deepspeed = path / f"deepspeed-rank{rank}.json"
        deepspeed.write_text(json.dumps(engine_keys["deepspeed"]))
        engine_keys["deepspeed"] = str(deepspeed)
    config = {
        **BASE_CONFIG, **STEP_CONFIG, **engine_keys,
        "base_model": model_dir, "datasets": [{**ALPACA, "path": data}],
        "output_dir": str(path / "out"), "dataset_prepared_path": str(path / "prepared"),
        "micro_batch_size": ROWS if engine == "single" else ROWS // 2,
        "plugins": [PLUGIN], "prompt_loss_weight": plw,
    }
    config_path = path / f"config-rank{rank}.yml"
    config_path.write_text(json.dumps(config, indent=2))
    return config_path


def build_device_meshes_on_cpu() -> None:
    """Make ``ParallelismConfig.build_device_mesh("cuda")`` build the mesh on CPU (see the docstring)."""
    from accelerate.parallelism_config import ParallelismConfig

    build_device_mesh = ParallelismConfig.build_device_mesh
    ParallelismConfig.build_device_mesh = lambda self, device_type: build_device_mesh(self, "cpu")


def train_on_cpu_processes() -> None:
    """Make every ``TrainingArguments`` run on CPU processes over gloo (see the docstring)."""
    from transformers import TrainingArguments

    post_init = TrainingArguments.__post_init__

    def __post_init__(self) -> None:
        self.use_cpu, self.ddp_backend = True, "gloo"
        post_init(self)

    TrainingArguments.__post_init__ = __post_init__


def main(engine: str, model_dir: str, data: str, output_dir: str) -> None:
    import axolotl.train
    import axolotl.utils.distributed
    from accelerate.state import PartialState
    from axolotl.cli.args import TrainerCliArgs
    from axolotl.cli.config import load_cfg
    from axolotl.cli.train import do_train

    if engine != "single":
        PartialState(cpu=True, backend="gloo")
        allow_fsdp_and_deepspeed_on_cpu()
        build_device_meshes_on_cpu()
        train_on_cpu_processes()
    output = Path(output_dir)
    execute_training = axolotl.train.execute_training
    current: dict[str, float] = {}

    def execute_and_save(cfg, trainer, resume_from_checkpoint):
        execute_training(cfg, trainer, resume_from_checkpoint)
        assert trainer.state.global_step == 1, trainer.state.global_step
        state = full_parameters(trainer)
        if state is not None:
            kind = trainer.accelerator.distributed_type.value
            record = {"parameters": state, "distributed_type": kind, "processes": trainer.accelerator.num_processes,
                      "trainer": type(trainer).__name__}
            torch.save(record, output / f"{current['plw']}.pt")

    axolotl.train.execute_training = execute_and_save
    axolotl.train.save_trained_model = lambda cfg, trainer, model: None
    axolotl.train.cleanup_distributed = lambda: None
    for plw in PROMPT_LOSS_WEIGHTS:
        current["plw"] = plw
        axolotl.utils.distributed.distributed_state = None
        cfg = load_cfg(str(write_config(output / f"run-{plw}", engine, model_dir, data, plw)))
        if engine != "single":
            cfg.device_map = None
        do_train(cfg, TrainerCliArgs())


if __name__ == "__main__":
    main(*sys.argv[1:5])
