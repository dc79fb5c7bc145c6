"""The prompt-weighted causal-LM loss: ``sum_i w_i * nll_i / W``.

``w_i`` is 1 on completion targets, the prompt loss weight on prompt targets and 0 elsewhere
(see ``masks.py``), refined by role and per-message weights where the batch carries them
(``roles.LossWeights``). ``W`` is the ``normalizer`` when given, which adapters set to W of the
whole optimiser step (every micro-batch on every rank), else W of this call: the weight sum, or the
count of weighted targets under ``normalization="token_count"``. Every function takes the weights as
a bare prompt loss weight or as ``LossWeights``. Arithmetic is fp32 whatever the dtype of the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .chunked import default_chunk_size, score_rows, weighted_linear_cross_entropy
from .heads import call_lm_head, check_head_function, check_head_structure
from .masks import LossMasks
from .roles import METRIC_ROLES, LossWeights

Normalizer = float | int | Tensor | None


@dataclass(frozen=True)
class PLWLoss:
    """The loss to backpropagate and the metrics beside it (all metrics detached, fp32 tensors).

    ``prompt_loss`` and ``completion_loss`` are mean NLLs over the tokens scored in each class
    (0 where none was); ``prompt_tokens`` and ``completion_tokens`` count those tokens, so that
    metrics can be averaged over many calls weighted by tokens. ``weight_sum`` is W of this call.
    Where the masks carry roles, ``role_nll_sums`` and ``role_tokens`` hold the summed NLL and the
    count of scored targets of each of ``roles.METRIC_ROLES``, in that order (else ``None``).
    """

    loss: Tensor
    prompt_loss: Tensor
    completion_loss: Tensor
    prompt_tokens: Tensor
    completion_tokens: Tensor
    weight_sum: Tensor
    role_nll_sums: Tensor | None = None
    role_tokens: Tensor | None = None


def prompt_weighted_loss(
    logits: Tensor, masks: LossMasks, prompt_loss_weight: float | LossWeights, *, normalizer: Normalizer = None
) -> PLWLoss:
    """The loss from materialised logits ``[B, T, V]``, the logit at ``t`` predicting token ``t + 1``.

    Costs what the framework's own cross-entropy costs: every row is scored, which also gives the
    prompt metric at a prompt loss weight of 0.
    """
    loss_weights = LossWeights.of(prompt_loss_weight)
    batch, steps = masks.shape
    if logits.dim() != 3 or tuple(logits.shape[:2]) != (batch, steps + 1):
        raise ValueError(
            f"logits must have shape [batch, tokens, vocab] = [{batch}, {steps + 1}, V] to match the masks, "
            f"got shape {tuple(logits.shape)}"
        )
    vocab = logits.shape[-1]
    scored = masks.completion | masks.prompt
    _check_targets(masks.targets, scored, vocab)

    # Score all T positions of the flat view, as transformers does, so that no copy of the logits is made.
    targets = F.pad(torch.where(scored, masks.targets, -100), (0, 1), value=-100)
    nll = F.cross_entropy(logits.float().reshape(-1, vocab), targets.reshape(-1), reduction="none", ignore_index=-100)
    nll = nll.reshape(batch, steps + 1)[:, :-1]
    weights = masks.weights(loss_weights)
    weight_sum = _normalizer_sum(weights, loss_weights)
    loss = (weights * nll).sum() / _denominator(normalizer, weight_sum)
    return _result(loss, nll.detach(), masks, masks.completion | masks.prompt, weight_sum)


def prompt_weighted_loss_from_hidden(
    hidden_states: Tensor,
    lm_head_weight: Tensor | nn.Module,
    masks: LossMasks,
    prompt_loss_weight: float | LossWeights,
    *,
    lm_head_bias: Tensor | None = None,
    normalizer: Normalizer = None,
    chunk_size: int | None = None,
    score_unweighted: bool = False,
) -> PLWLoss:
    """The loss from the last hidden states ``[B, T, H]`` and the LM head, without full logits.

    Only rows of weight above 0 get logits, one chunk of ``chunk_size`` rows at a time, and their
    gradient is formed during the forward pass. Prompt rows at a prompt loss weight of 0 are not
    scored at all unless ``score_unweighted`` asks for their NLL (forward only, no gradient), so
    that ``prompt_loss`` can be reported; otherwise it is 0 with a ``prompt_tokens`` of 0.

    ``lm_head_weight`` is the head's weight ``[V, H]`` (with ``lm_head_bias``), or the head module
    itself: a ``torch.nn.Linear`` or a wrapper that calls one. A module is first checked to compute
    exactly ``F.linear(hidden, weight, bias)`` (``heads.py``: a head with a learned logit scale, an
    output transform or a hook that changes its output is refused with a ``ValueError``), then read
    inside its own call, with its own bias.
    """
    if isinstance(lm_head_weight, nn.Module):
        return _loss_from_head_module(
            hidden_states, lm_head_weight, masks, prompt_loss_weight, lm_head_bias=lm_head_bias,
            normalizer=normalizer, chunk_size=chunk_size, score_unweighted=score_unweighted,
        )
    loss_weights = LossWeights.of(prompt_loss_weight)
    batch, steps = masks.shape
    if hidden_states.dim() != 3 or tuple(hidden_states.shape[:2]) != (batch, steps + 1):
        raise ValueError(
            f"hidden_states must have shape [batch, tokens, hidden] = [{batch}, {steps + 1}, H] to match the "
            f"masks, got shape {tuple(hidden_states.shape)}"
        )
    hidden_size = hidden_states.shape[-1]
    if lm_head_weight.dim() != 2 or lm_head_weight.shape[1] != hidden_size:
        raise ValueError(
            f"lm_head_weight must have shape [vocab, {hidden_size}] to match hidden_states, "
            f"got shape {tuple(lm_head_weight.shape)}"
        )
    vocab = lm_head_weight.shape[0]
    if lm_head_bias is not None and tuple(lm_head_bias.shape) != (vocab,):
        raise ValueError(f"lm_head_bias must have shape [{vocab}], got shape {tuple(lm_head_bias.shape)}")
    chunk_size = default_chunk_size(vocab) if chunk_size is None else chunk_size
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    scored = masks.completion | masks.prompt
    _check_targets(masks.targets, scored, vocab)

    weights = masks.weights(loss_weights)
    weight_sum = _normalizer_sum(weights, loss_weights)
    # Row r of the flat [B * T, H] view holds the hidden state that predicts target (r // T, r % T).
    flat_hidden = hidden_states.reshape(-1, hidden_size)
    row_of_target = torch.arange(batch * (steps + 1), device=hidden_states.device).reshape(batch, steps + 1)[:, :-1]

    weighted = weights > 0
    rows = row_of_target[weighted]
    scale = weights[weighted] / _denominator(normalizer, weight_sum)
    loss, nll_weighted = weighted_linear_cross_entropy(
        flat_hidden[rows], lm_head_weight, lm_head_bias, masks.targets[weighted], scale, chunk_size
    )
    nll = torch.zeros(masks.shape, dtype=torch.float32, device=hidden_states.device)
    nll[weighted] = nll_weighted
    measured = weighted
    if score_unweighted:
        unweighted = scored & ~weighted
        nll[unweighted] = score_rows(
            flat_hidden[row_of_target[unweighted]].detach(), lm_head_weight.detach(),
            None if lm_head_bias is None else lm_head_bias.detach(), masks.targets[unweighted], chunk_size,
        )
        measured = scored
    return _result(loss, nll, masks, measured, weight_sum)


def _loss_from_head_module(hidden_states: Tensor, head: nn.Module, masks: LossMasks, prompt_loss_weight: float | LossWeights,
                           *, lm_head_bias: Tensor | None, **options: Any) -> PLWLoss:
    if lm_head_bias is not None:
        raise ValueError(f"lm_head_bias was given with the LM head {type(head).__name__} as lm_head_weight; the "
                         "module's own bias is used, so leave lm_head_bias out")
    check_head_structure(head)
    if hidden_states.dim() == 3:
        check_head_function(head, hidden_states)

    def loss_inside_the_call(linear: nn.Linear, hidden: Tensor) -> tuple[Tensor | None, ...]:
        result = prompt_weighted_loss_from_hidden(hidden, linear.weight, masks, prompt_loss_weight,
                                                  lm_head_bias=linear.bias, **options)
        return tuple(getattr(result, field.name) for field in fields(PLWLoss))  # engines' hooks follow tuples

    return PLWLoss(*call_lm_head(head, loss_inside_the_call, hidden_states))


def prompt_weighted_loss_from_token_nll(
    token_nll: Tensor, masks: LossMasks, prompt_loss_weight: float | LossWeights, *, normalizer: Normalizer = None,
    scored: Tensor | None = None,
) -> PLWLoss:
    """The loss from per-target NLLs ``[B, T - 1]`` that a fused LM head already computed (TRL's).

    ``scored`` marks the targets whose NLL was computed (default: every prompt and completion
    target); the metrics count only those. Entries elsewhere are ignored.
    """
    loss_weights = LossWeights.of(prompt_loss_weight)
    if tuple(token_nll.shape) != tuple(masks.shape):
        raise ValueError(f"token_nll has shape {tuple(token_nll.shape)} but the masks have shape {tuple(masks.shape)}")
    measured = masks.completion | masks.prompt
    if scored is not None:
        measured = measured & scored
    weights = masks.weights(loss_weights)
    if scored is not None and bool(((weights > 0) & ~measured).any()):
        raise ValueError("scored leaves out targets of weight above 0; their NLL is needed for the loss")
    weight_sum = _normalizer_sum(weights, loss_weights)
    nll = torch.where(measured, token_nll.float(), torch.zeros((), device=token_nll.device))
    loss = (weights * nll).sum() / _denominator(normalizer, weight_sum)
    return _result(loss, nll.detach(), masks, measured, weight_sum)


def _normalizer_sum(weights: Tensor, loss_weights: LossWeights) -> Tensor:
    """W of one call from its per-target weights (``LossMasks.weight_sum`` for the same masks)."""
    if loss_weights.normalization == "token_count":
        return (weights > 0).sum().float()
    return weights.sum()


def _denominator(normalizer: Normalizer, weight_sum: Tensor) -> Tensor:
    """W, or 1 where W is 0: then every weight is 0 too and the loss is an attached 0."""
    if normalizer is None:
        total = weight_sum
    elif isinstance(normalizer, Tensor):
        total = normalizer.detach().to(device=weight_sum.device, dtype=torch.float32).reshape(())
    elif isinstance(normalizer, (int, float)) and not isinstance(normalizer, bool) and normalizer >= 0:
        total = torch.tensor(float(normalizer), device=weight_sum.device)
    else:
        raise ValueError(f"normalizer must be a non-negative number or a scalar tensor, got {normalizer!r}")
    return torch.where(total > 0, total, torch.ones_like(total))


def _check_targets(targets: Tensor, scored: Tensor, vocab: int) -> None:
    outside = scored & ((targets < 0) | (targets >= vocab))
    if outside.any():
        bad = targets[outside][0].item()
        raise ValueError(f"target token id {bad} is outside the vocabulary of size {vocab}")


def _result(loss: Tensor, nll: Tensor, masks: LossMasks, measured: Tensor, weight_sum: Tensor) -> PLWLoss:
    """The loss and its metrics over the ``measured`` targets (those whose NLL was computed)."""
    prompt, completion = masks.prompt & measured, masks.completion & measured
    prompt_tokens = prompt.sum().float()
    completion_tokens = completion.sum().float()
    role_nll_sums = role_tokens = None
    if masks.roles is not None:
        in_role = torch.stack([(masks.roles == role) & measured for role in METRIC_ROLES])
        role_nll_sums = (nll.detach() * in_role).flatten(1).sum(1)
        role_tokens = in_role.flatten(1).sum(1).float()
    return PLWLoss(
        loss=loss,
        prompt_loss=(nll * prompt).sum() / prompt_tokens.clamp(min=1),
        completion_loss=(nll * completion).sum() / completion_tokens.clamp(min=1),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        weight_sum=weight_sum.detach(),
        role_nll_sums=role_nll_sums,
        role_tokens=role_tokens,
    )
