"""A weighted linear cross-entropy that never holds the logits of more than one chunk of rows.

The token weights and the normaliser are known before the forward pass, so the gradient of the
loss, ``w_i / W * (softmax_i - onehot_i)``, is formed chunk by chunk during the forward pass and
only scaled in the backward pass: no second pass over the vocabulary, no saved logits. This is
only right because the loss is a scalar; the per-row NLLs come out detached, as metrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LOGITS_PER_CHUNK = 2**24  # fp32 elements of one chunk's logits: 64 MiB


def default_chunk_size(vocab_size: int) -> int:
    """Rows per chunk: about 64 MiB of fp32 logits, but at least 256 rows so that each pass over
    the LM head's weight still does enough work (large vocabularies)."""
    return max(256, min(8192, LOGITS_PER_CHUNK // max(vocab_size, 1)))


def _chunk_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    # The matmul runs in the model's dtype, as the model's own LM head would; the rest in fp32.
    return F.linear(hidden, weight, bias).float()


def score_rows(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_size: int) -> Tensor:
    """Per-row NLL in fp32, without gradient, one chunk at a time."""
    nll = torch.empty(targets.shape[0], dtype=torch.float32, device=hidden.device)
    with torch.no_grad():
        for start in range(0, targets.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            logits = _chunk_logits(hidden[rows], weight, bias)
            nll[rows] = torch.logsumexp(logits, dim=-1) - logits.gather(1, targets[rows, None]).squeeze(1)
    return nll


class WeightedLinearCrossEntropy(torch.autograd.Function):
    """``sum_i scale_i * nll_i`` over rows ``hidden @ weight.T + bias``, with per-row NLLs beside it."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, scale, chunk_size):
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        if not (needs_hidden or needs_weight or needs_bias):
            nll = score_rows(hidden, weight, bias, targets, chunk_size)
            ctx.mark_non_differentiable(nll)
            return (scale * nll).sum(), nll

        nll = torch.empty(targets.shape[0], dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if needs_weight else None
        grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if needs_bias else None
        with torch.no_grad():
            for start in range(0, targets.shape[0], chunk_size):
                rows = slice(start, start + chunk_size)
                chunk_targets = targets[rows, None]
                logits = _chunk_logits(hidden[rows], weight, bias)
                log_norm = torch.logsumexp(logits, dim=-1, keepdim=True)
                nll[rows] = (log_norm - logits.gather(1, chunk_targets)).squeeze(1)
                grad_logits = logits.sub_(log_norm).exp_()
                grad_logits.scatter_add_(1, chunk_targets, torch.full_like(log_norm, -1.0))
                grad_logits.mul_(scale[rows, None])
                if needs_bias:
                    grad_bias += grad_logits.sum(0)
                grad_logits = grad_logits.to(hidden.dtype)
                if needs_hidden:
                    grad_hidden[rows] = grad_logits @ weight
                if needs_weight:
                    # Accumulated in place: no [V, H] temporary per chunk.
                    grad_weight.addmm_(grad_logits.T.to(grad_weight.dtype), hidden[rows].to(grad_weight.dtype))
        ctx.grads = (
            grad_hidden,
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
        )
        ctx.mark_non_differentiable(nll)
        return (scale * nll).sum(), nll

    @staticmethod
    def backward(ctx, grad_loss, _grad_nll):
        if ctx.grads is None:
            raise RuntimeError("the chunked prompt-weighted loss supports one backward pass per forward pass")
        # The saved gradients are ours alone: scale them in place rather than copy a [V, H] tensor.
        scaled = [None if g is None else g.mul_(grad_loss.to(g.dtype)) for g in ctx.grads]
        ctx.grads = None
        return (*scaled, None, None, None)


def weighted_linear_cross_entropy(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, scale: Tensor, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """``(sum_i scale_i * nll_i, nll)`` for rows of ``hidden`` against ``targets``; see the module."""
    return WeightedLinearCrossEntropy.apply(hidden, weight, bias, targets, scale, chunk_size)
