"""Two gloo processes on CPU take the same optimiser step as one process with the same rows:
W is summed over ranks, and the logged prompt / completion (and role) losses are reduced over ranks,
also on conversations with role and per-message weights."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
from process_group import run_process_group
from trl_harness import assert_same_parameters, initial_parameters

WORKER = Path(__file__).with_name("trl_ddp_worker.py")


def run_worker(launcher: list[str], model_dir: Path, output: Path, *args: int | str, worker: Path = WORKER) -> dict:
    """``worker MODEL_DIR OUTPUT ARGS...`` under ``launcher``; what the worker saved to ``output``."""
    env = {**os.environ, "PYTHONPATH": str(worker.parent), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [*launcher, str(worker), str(model_dir), str(output), *map(str, args)]
    result = run_process_group(command, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return torch.load(output)


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("data", ["instructions", "chat"])
def test_two_process_ddp_equals_one_process(data, tiny_model_dir, tmp_path):
    """``chat``: conversations with role weights and per-message weights (the role metrics too)."""
    single = run_worker([sys.executable], tiny_model_dir, tmp_path / "single.pt", 4, 1, data)  # batch, accumulation
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port()]
    ddp = run_worker(torchrun, tiny_model_dir, tmp_path / "ddp.pt", 1, 2, data)
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    assert_same_parameters(single["parameters"], ddp["parameters"], initial_parameters(tiny_model_dir))
    keys = ["loss", "prompt_loss", "completion_loss"]
    if data == "chat":
        keys += ["system_loss", "tool_loss", "template_loss", "history_loss"]
    for key in keys:
        assert ddp["logs"][key] == pytest.approx(single["logs"][key], rel=1e-5), key
