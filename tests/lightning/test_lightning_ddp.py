"""Two DDP processes on CPU (gloo) give exactly the single-process gradient of the whole batch: W is
summed across ranks on every step, and the loss is scaled for DDP's gradient averaging; with
gradient accumulation too, where W is the whole window's on both ranks."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
from process_group import run_process_group
from ddp_gradient_run import ACCUMULATE_CLIP
from plw_lightning_testlib import (
    TinyLM,
    assert_gradients_close,
    concatenated,
    gradients,
    load_model,
    load_tokenizer,
    loader,
    max_gradient_difference,
    parameters,
    rank_batches,
    rank_micro_batches,
    reference_loss,
    trainer,
)

from plw_plugins.integrations.lightning import PromptLossWeight

HERE = Path(__file__).parent
PLW = 0.3
TOLERANCE = dict(rtol=1e-4, atol=1e-6)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_ranks(model_dir, out_file, *mode: str) -> dict:
    """ddp_gradient_run.py on two CPU processes; what its rank 0 saved."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(HERE / "ddp_gradient_run.py"), str(model_dir), str(PLW), str(out_file),
        *mode,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    completed = run_process_group(command, env=env, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    ddp = torch.load(out_file)
    assert ddp["world_size"] == 2
    return ddp


@pytest.mark.slow
def test_two_process_ddp_gradient_equals_single_process(tiny_model_dir, tmp_path):
    ddp = run_two_ranks(tiny_model_dir, tmp_path / "ddp_gradients.pt")

    shards = rank_batches(load_tokenizer(tiny_model_dir))
    whole = concatenated(shards)
    single = TinyLM(str(tiny_model_dir))
    trainer(max_steps=1, callbacks=[PromptLossWeight(prompt_loss_weight=PLW)]).fit(single, train_dataloaders=loader([whole]))

    assert_gradients_close(ddp["gradients"], single.first_gradients, **TOLERANCE)
    # And that is transformers' loss on the whole batch, which rank-local normalisation would miss by far.
    reference = load_model(tiny_model_dir)
    assert_gradients_close(single.first_gradients, gradients(reference, reference_loss(reference, whole, PLW)), **TOLERANCE)
    per_rank = [gradients(reference, reference_loss(reference, shard, PLW)) for shard in shards]
    rank_local = {name: (per_rank[0][name] + per_rank[1][name]) / 2 for name in per_rank[0]}
    assert max_gradient_difference(rank_local, single.first_gradients) > 100 * TOLERANCE["atol"]


@pytest.mark.slow
def test_two_ranks_of_two_micro_batches_equal_one_batch_of_all_four(tiny_model_dir, tmp_path):
    """accumulate_grad_batches=2 on each of 2 ranks, gradient clipping configured: the gradient and the
    parameters after the step are those of one process on the batch of all four micro-batches."""
    ddp = run_two_ranks(tiny_model_dir, tmp_path / "ddp_accumulated.pt", "accumulate")
    assert ddp["steps"] == 1

    micro_batches = [batch for rank in rank_micro_batches(load_tokenizer(tiny_model_dir)) for batch in rank]
    whole = concatenated(micro_batches)
    single = TinyLM(str(tiny_model_dir), learning_rate=1.0)
    trainer(max_epochs=1, gradient_clip_val=ACCUMULATE_CLIP, callbacks=[PromptLossWeight(prompt_loss_weight=PLW)]).fit(
        single, train_dataloaders=loader([whole])
    )
    assert_gradients_close(ddp["gradients"], single.first_gradients, **TOLERANCE)
    assert_gradients_close(ddp["parameters"], parameters(single), rtol=0.0, atol=1e-6)
    reference = load_model(tiny_model_dir)
    assert_gradients_close(single.first_gradients, gradients(reference, reference_loss(reference, whole, PLW)), **TOLERANCE)
