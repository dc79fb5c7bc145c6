"""Two DDP processes on CPU (gloo) give exactly the single-process gradient of the whole batch: W is
summed across ranks on every step, and the loss is scaled for DDP's gradient averaging."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
from process_group import run_process_group
from plw_lightning_testlib import (
    TinyLM,
    assert_gradients_close,
    gradients,
    load_model,
    load_tokenizer,
    loader,
    max_gradient_difference,
    rank_batches,
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


@pytest.mark.slow
def test_two_process_ddp_gradient_equals_single_process(tiny_model_dir, tmp_path):
    out_file = tmp_path / "ddp_gradients.pt"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(HERE / "ddp_gradient_run.py"), str(tiny_model_dir), str(PLW), str(out_file),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    completed = run_process_group(command, env=env, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    ddp = torch.load(out_file)
    assert ddp["world_size"] == 2

    shards = rank_batches(load_tokenizer(tiny_model_dir))
    whole = {key: torch.cat([shard[key] for shard in shards]) for key in shards[0]}
    single = TinyLM(str(tiny_model_dir))
    trainer(max_steps=1, callbacks=[PromptLossWeight(prompt_loss_weight=PLW)]).fit(single, train_dataloaders=loader([whole]))

    assert_gradients_close(ddp["gradients"], single.first_gradients, **TOLERANCE)
    # And that is transformers' loss on the whole batch, which rank-local normalisation would miss by far.
    reference = load_model(tiny_model_dir)
    assert_gradients_close(single.first_gradients, gradients(reference, reference_loss(reference, whole, PLW)), **TOLERANCE)
    per_rank = [gradients(reference, reference_loss(reference, shard, PLW)) for shard in shards]
    rank_local = {name: (per_rank[0][name] + per_rank[1][name]) / 2 for name in per_rank[0]}
    assert max_gradient_difference(rank_local, single.first_gradients) > 100 * TOLERANCE["atol"]
