"""Two gloo ranks, each with half of the batch and W summed across ranks, give the full-batch gradient."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from plw_plugins import build_loss_masks, prompt_weighted_loss_from_hidden, sum_across_ranks

from .batches import padded_batch

VOCAB, HIDDEN, PLW = 23, 6, 0.3


def _data():
    batch = padded_batch(torch.Generator().manual_seed(5), [9, 4, 7, 3], [6, 1, 5, 0], VOCAB)
    generator = torch.Generator().manual_seed(6)
    hidden = torch.randn(4, batch.input_ids.shape[1], HIDDEN, generator=generator)
    weight = torch.randn(VOCAB, HIDDEN, generator=generator)
    return batch, hidden, weight


def _gradient(rows, normalizer_of):
    batch, hidden, weight = _data()
    weight.requires_grad_()
    masks = build_loss_masks(batch.input_ids[rows], batch.labels[rows], attention_mask=batch.attention_mask[rows])
    normalizer = normalizer_of(masks.weight_sum(PLW))
    loss = prompt_weighted_loss_from_hidden(hidden[rows], weight, masks, PLW, normalizer=normalizer).loss
    (grad,) = torch.autograd.grad(loss, weight)
    return grad


def _rank(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    grad = _gradient(slice(2 * rank, 2 * rank + 2), sum_across_ranks)
    dist.all_reduce(grad)  # what DDP does, before its division by the world size
    out[rank] = grad
    dist.destroy_process_group()


def test_rank_split_with_global_normalizer_equals_full_batch_gradient():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = mp.get_context("spawn").Manager().dict()
    mp.spawn(_rank, args=(port, out), nprocs=2, join=True)
    full = _gradient(slice(None), lambda local: local)
    torch.testing.assert_close(out[0], full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[1], full, atol=1e-6, rtol=1e-5)
