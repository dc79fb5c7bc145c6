"""FSDP1, FSDP2 and DeepSpeed ZeRO-2/3 on 2 CPU processes (gloo): Axolotl's own training entry with
the PLW plugin (its ``PromptLossWeightAxolotlTrainer``) takes the same SGD step as one process over the
same rows, at prompt loss weights 0, 0.1 and 1; also with the LM head sharded as an FSDP2 unit of its
own and under ZeRO-3 with every parameter partitioned.

The engines run on CPU through the test-only shim in ``tests/cpu_engines.py`` and the patches that
``axolotl_engine_worker.py`` lists (accelerate otherwise falls back to DDP on CPU, and Axolotl assumes
a GPU). One launch per engine runs the three weights.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
from axolotl_engine_worker import ENGINES, PROMPT_LOSS_WEIGHTS
from cpu_engines import ENGINE_ENV
from process_group import run_process_group

pytest.importorskip("deepspeed", reason="the engine tests need deepspeed (scripts/setup.sh installs it)")

WORKER = Path(__file__).with_name("axolotl_engine_worker.py")
TOLERANCE = 1e-5
EXPECTED_TYPE = {"fsdp1": "FSDP", "fsdp2": "FSDP", "fsdp2_lm_head_unit": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}
ENV = {
    **os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1", "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
}


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def run_worker(launcher: list[str], engine: str, model_dir: Path, data: Path, output: Path, env: dict) -> dict:
    """The records the worker saved, per prompt loss weight."""
    command = [*launcher, str(WORKER), engine, str(model_dir), str(data), str(output)]
    result = run_process_group(command, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return {plw: torch.load(output / f"{plw}.pt") for plw in PROMPT_LOSS_WEIGHTS}


@pytest.fixture(scope="module")
def single_process(tiny_model_dir_pad_is_eos, alpaca_jsonl, tmp_path_factory) -> dict:
    """One process over all four rows, per prompt loss weight."""
    output = tmp_path_factory.mktemp("axolotl-single")
    return run_worker([sys.executable], "single", tiny_model_dir_pad_is_eos, alpaca_jsonl, output, ENV)


@pytest.mark.slow
@pytest.mark.parametrize("engine", list(ENGINES))
def test_engine_equals_one_process(engine, single_process, tiny_model_dir_pad_is_eos, alpaca_jsonl, tmp_path):
    from transformers import AutoModelForCausalLM

    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port()]
    sharded = run_worker(launcher, engine, tiny_model_dir_pad_is_eos, alpaca_jsonl, tmp_path, {**ENV, **ENGINE_ENV})
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir_pad_is_eos).state_dict()
    differences = {}
    for plw in PROMPT_LOSS_WEIGHTS:
        expected, record = single_process[plw]["parameters"], sharded[plw]
        assert (record["distributed_type"], record["processes"]) == (EXPECTED_TYPE[engine], 2)
        assert record["trainer"] == single_process[plw]["trainer"] == "PromptLossWeightAxolotlTrainer"
        assert record["parameters"].keys() == expected.keys()
        moved = max((expected[name] - initial[name].float()).abs().max().item() for name in expected)
        assert moved > 100 * TOLERANCE, f"the step moved the parameters by only {moved}"
        differences[plw] = max((record["parameters"][name] - expected[name]).abs().max().item() for name in expected)
    print(f"{engine}: max parameter difference per prompt loss weight: {differences}")
    assert max(differences.values()) <= TOLERANCE, differences
