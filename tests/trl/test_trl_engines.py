"""FSDP1, FSDP2 and DeepSpeed ZeRO-2/3 on 2 CPU processes (gloo) take the same optimiser step as one
process with the same rows, on both loss paths (TRL's fused LM head where TRL has one, and the core's
loss from the hidden state), at prompt loss weights 0, 0.1 and 1; also with the LM head sharded as an
FSDP2 unit of its own and under ZeRO-3 with every parameter partitioned.

The engines run on CPU through the test-only shim in ``tests/cpu_engines.py`` (accelerate otherwise
falls back to DDP on CPU). One launch per engine runs every path and weight (trl_engine_worker.py).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
from cpu_engines import ENGINE_ENV
from process_group import run_process_group
from trl_harness import PARAMETER_TOLERANCE, initial_parameters, train_one_step
from trl_engine_worker import ENGINES, PROMPT_LOSS_WEIGHTS, ROWS

from plw_plugins.cli.builtin_data import instruction_rows
from plw_plugins.integrations.trl import PLWSFTTrainer

pytest.importorskip("deepspeed", reason="the engine tests need deepspeed (scripts/setup.sh installs it)")

WORKER = Path(__file__).with_name("trl_engine_worker.py")
PATHS = ("fused", "lean") if PLWSFTTrainer.plw_fused_lm_head else ("lean",)
EXPECTED_TYPE = {"fsdp1": "FSDP", "fsdp2": "FSDP", "fsdp2_lm_head_unit": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.fixture(scope="module")
def single_process(tiny_model_dir, tmp_path_factory) -> dict[tuple[str, float], dict[str, torch.Tensor]]:
    """The parameters after one step of one process over all rows, per (path, weight)."""
    root = tmp_path_factory.mktemp("single")
    results = {}
    for path in PATHS:
        for plw in PROMPT_LOSS_WEIGHTS:
            trainer = train_one_step(
                tiny_model_dir, instruction_rows(ROWS), root / f"{path}-{plw}", plw=plw, per_device_train_batch_size=ROWS,
                configure=lambda trainer: setattr(trainer, "plw_fused_lm_head", path == "fused"),
            )
            results[path, plw] = {name: p.detach().clone() for name, p in trainer.model.state_dict().items()}
    return results


@pytest.mark.slow
@pytest.mark.parametrize("engine", list(ENGINES))
def test_engine_equals_one_process(engine, single_process, tiny_model_dir, tmp_path):
    env = {**os.environ, **ENGINE_ENV, "PYTHONPATH": str(WORKER.parent), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
        str(WORKER), engine, str(tiny_model_dir), str(tmp_path), ",".join(PATHS),
    ]
    result = run_process_group(command, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    initial = initial_parameters(tiny_model_dir)
    differences = {}
    for (path, plw), expected in single_process.items():
        saved = torch.load(tmp_path / f"{path}-{plw}.pt")
        assert saved["distributed_type"] == EXPECTED_TYPE[engine]
        sharded = saved["parameters"]
        assert sharded.keys() == expected.keys()
        moved = max((expected[name] - initial[name]).abs().max().item() for name in initial)
        assert moved > 100 * PARAMETER_TOLERANCE, f"the step moved the parameters by only {moved}"
        differences[path, plw] = max((sharded[name] - expected[name]).abs().max().item() for name in expected)
    print(f"{engine}: max parameter difference per (path, weight): {differences}")
    assert max(differences.values()) <= PARAMETER_TOLERANCE, differences
