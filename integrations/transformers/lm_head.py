"""Reach the model body's last hidden state and the LM head through the usual wrappers, and give the
model a forward that returns the prompt-weighted loss instead of logits.

The loss must be computed inside the outermost wrapper's ``forward`` (DDP prepares its gradient
reduction there; FSDP gathers parameters there), so this module does what TRL does for its fused LM
head: it replaces the ``forward`` of the causal-LM module with one that, given ``plw_request=...``,
runs the body, hands its last hidden state and the LM head to the core, and returns the core's result.
Without ``plw_request`` the original forward runs, so generation and plain calls are unchanged.

The head is read inside its own call (``plw_plugins.heads.call_lm_head``), so that FSDP and ZeRO-3
gather and reduce its parameters as they do for any module, and PEFT's ``modules_to_save`` copy is
the one trained. A model is accepted only where its logits are ``F.linear`` of the head's weight and
bias on the last hidden state: the head is checked as a structure (``check_lm_head``) and, in a
probe run, as a function together with the model around it (``check_logits``). That refuses
soft-capping, logit scaling and learned logit scales, whatever the config calls them.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.utils import ModelOutput

from plw_plugins import LossMasks, PLWLoss, prompt_weighted_loss_from_hidden, prompt_weighted_loss_from_token_nll
from plw_plugins.heads import (
    UNSUPPORTED,
    call_lm_head,
    check_head_structure,
    describe_difference,
    head_call_problem,
    head_function_error,
    linear_layers,
    recorded_linear_calls,
)
from plw_plugins.roles import LossWeights

from .metrics import completion_token_statistics


@dataclass
class PLWRequest:
    """What the patched forward needs besides the model inputs (a plain object, so that DDP and
    accelerate pass it through untouched)."""

    masks: LossMasks
    loss_weights: LossWeights
    normalizer: Tensor | float | None = None
    score_unweighted: bool = True
    completion_statistics: bool = False
    fused_lm_head: bool = False
    """Score the targets with the framework's fused LM head (TRL >= 1.16 installs one: the model's
    original forward accepts ``fused_lm_head=True`` and returns per-token ``log_probs``)."""


@dataclass
class PLWForwardOutput(ModelOutput):
    """The core's ``PLWLoss`` fields, plus TRL's completion-token statistics when asked for
    (``entropy_sum`` and ``correct_tokens`` over completion targets, else ``None``).

    ``loss`` must stay the first field: transformers reads a model output's loss as its first item."""

    loss: Tensor | None = None
    prompt_loss: Tensor | None = None
    completion_loss: Tensor | None = None
    prompt_tokens: Tensor | None = None
    completion_tokens: Tensor | None = None
    weight_sum: Tensor | None = None
    role_nll_sums: Tensor | None = None
    role_tokens: Tensor | None = None
    entropy_sum: Tensor | None = None
    correct_tokens: Tensor | None = None

    @classmethod
    def of(cls, result: PLWLoss, entropy_sum: Tensor | None = None, correct_tokens: Tensor | None = None) -> PLWForwardOutput:
        """The core's result with TRL's statistics beside it."""
        return cls(**{f.name: getattr(result, f.name) for f in fields(PLWLoss)},
                   entropy_sum=entropy_sum, correct_tokens=correct_tokens)

    def as_plw_loss(self) -> PLWLoss:
        return PLWLoss(**{f.name: getattr(self, f.name) for f in fields(PLWLoss)})


OUTPUT_FIELDS = tuple(f.name for f in fields(PLWForwardOutput))


def unwrap_causal_lm(model: nn.Module) -> nn.Module:
    """The causal-LM module inside DDP / FSDP / accelerate / PEFT wrappers (what owns the LM head)."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, DataParallel, FSDP1, DeepSpeed
            model = model.module
        elif callable(getattr(model, "get_base_model", None)):  # PEFT
            model = model.get_base_model()
    return model


PROBE_TOKENS = 8
"""Tokens of the probe that checks a model's logits against its LM head's output."""

PROBE_LOGIT_SCALE = 30.0
"""Size of the logits the probe substitutes for the head's output: large enough that soft-capping shows."""

_CONFIG_HINTS = ("softcap", "soft_cap", "logit", "multiplier", "scaling", "scale")


def check_lm_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(body, lm_head)`` of a causal LM whose logits come from calling ``lm_head`` on the body's output.

    ``lm_head`` is the module the model calls: a ``torch.nn.Linear``, or a wrapper that calls one (an
    FSDP unit, PEFT's ``modules_to_save`` copy). Raises a ``ValueError`` saying what is missing where
    computing the loss from the head's linear layer cannot reproduce the model's logits: no head, a
    head not built as a plain linear map (an adapter, a non-float layer, a parameter or buffer of its
    own: ``plw_plugins.heads.check_head_structure``), no separate body. What the head and the model
    compute is checked by running them (``check_logits``).
    """
    name = type(model).__name__
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is None:
        raise ValueError(
            f"{name} has no LM head (get_output_embeddings() returned nothing): the prompt loss weight needs a "
            "causal language model whose logits are the last hidden state times the head's weight"
        )
    check_head_structure(head, name)
    body = getattr(model, "base_model", None)
    if not isinstance(body, nn.Module) or body is model:
        raise ValueError(
            f"{name} exposes no model body separate from its LM head (base_model_prefix="
            f"{getattr(model, 'base_model_prefix', None)!r}); the prompt loss weight needs the body's last hidden state"
        )
    return body, head


def check_logits(model: nn.Module, input_ids: Tensor, forward: Callable[..., Any] | None = None) -> None:
    """Raise a ``ValueError`` unless ``model``'s logits are ``F.linear`` of its LM head's weight and bias
    on its body's last hidden state.

    Runs the model once on ``input_ids`` (a short probe) and checks, in that one forward pass, that
    the head computes ``F.linear`` of its weight and bias (no scaling in its ``forward``, no forward
    hook changing its output: ``plw_plugins.heads.head_call_problem``), that what the head is given is
    the body's last hidden state, and that the model returns the head's output unchanged: the head's
    output is replaced by large random logits, which must come out as the logits. This finds
    soft-capping, logit scaling and any other step between the body, the head and the logits,
    whatever the architecture calls it. ``forward`` is the model's forward to run (default: calling
    ``model``).
    """
    body, head = check_lm_head(model)
    name = type(model).__name__
    seen: list[tuple[Tensor, Tensor, Tensor]] = []

    def substitute(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        generator = torch.Generator().manual_seed(len(seen))
        probe = torch.randn(output.shape, generator=generator).mul(PROBE_LOGIT_SCALE).to(output.device, output.dtype)
        seen.append((args[0].detach(), output, probe))
        return probe

    was_training = model.training
    model.eval()
    # Registered last, so that it sees the head's output after every hook the head already has.
    handle = head.register_forward_hook(substitute)
    try:
        with torch.no_grad():
            hidden = _last_hidden_state(body(input_ids=input_ids, use_cache=False))
            with recorded_linear_calls(head) as calls:
                logits = (forward or model)(input_ids=input_ids, use_cache=False).logits
    finally:
        handle.remove()
        model.train(was_training)
    if len(seen) != 1:
        raise ValueError(f"{name} called its LM head {len(seen)} times for one forward pass; the prompt loss weight "
                         "needs logits that are one call of the head on the last hidden state")
    head_input, head_output, substituted = seen[0]
    head_problem = head_call_problem(calls, head_input, head_output)
    if head_problem:
        raise head_function_error(head, head_problem, name)
    problem = None
    # Two runs of the body may differ by kernel noise in half precision; a real transform differs far more.
    noise = 1e-3 * hidden.float().abs().max().item()
    if head_input.shape != hidden.shape or not torch.allclose(head_input.float(), hidden.float(), rtol=1e-3, atol=noise):
        problem = "the hidden state it gives its LM head is not its body's last hidden state"
    elif logits.shape != substituted.shape:
        problem = f"its logits have shape {tuple(logits.shape)}, its LM head's output {tuple(substituted.shape)}"
    elif not torch.allclose(logits.float(), substituted.float(), rtol=1e-4, atol=1e-4):
        difference = describe_difference(substituted.float(), logits.float())
        problem = f"it transforms its LM head's output into its logits ({difference})"
    if problem:
        raise ValueError(
            f"{name}: {problem}, which the prompt-weighted loss (computed from the hidden state and the head's "
            f"weight) does not reproduce; {UNSUPPORTED}{_config_hint(model)}"
        )


def _config_hint(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if callable(getattr(config, "get_text_config", None)) else config
    items = vars(text_config).items() if text_config is not None else ()
    hints = [f"{key}={value!r}" for key, value in items if any(part in key for part in _CONFIG_HINTS)
             and isinstance(value, (int, float)) and not isinstance(value, bool) and value not in (0, 1)]
    return f" (its config sets {', '.join(hints)})" if hints else ""


def _last_hidden_state(outputs: Any) -> Tensor:
    return outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]


def _parameters_materialized(model: nn.Module) -> bool:
    """False while parameters are partitioned (ZeRO-3), sharded (FSDP2 DTensors) or on the meta device."""
    return not any(
        parameter.numel() == 0 or parameter.is_meta or hasattr(parameter, "ds_id") or hasattr(parameter, "placements")
        for parameter in model.parameters()
    )


def install_plw_forward(model: nn.Module) -> nn.Module:
    """Give the causal LM inside ``model`` a forward that accepts ``plw_request``; return that module.

    Idempotent. Checks the LM head (``check_lm_head``) and, with a probe, the logits (``check_logits``)
    first, so that an unsupported model fails at construction rather than with a wrong loss. Where the
    parameters are not whole yet (partitioned by ZeRO-3 at load time, say), the probe runs on the first
    batch instead.
    """
    causal_lm = unwrap_causal_lm(model)
    _, head = check_lm_head(causal_lm)
    if getattr(causal_lm, "_plw_forward_installed", False):
        return causal_lm
    original_forward = causal_lm.forward
    logits_checked = False
    if _parameters_materialized(causal_lm):
        device = next(causal_lm.parameters()).device  # the embeddings' device, first, with a device map
        vocab = linear_layers(head)[0].weight.shape[0]
        check_logits(causal_lm, torch.arange(1, PROBE_TOKENS + 1, device=device).remainder(vocab)[None])
        logits_checked = True

    # Keep the original signature: `generate` and column filtering inspect it.
    @functools.wraps(type(causal_lm).forward)
    def forward(self, *args: Any, plw_request: PLWRequest | None = None, **kwargs: Any):
        nonlocal logits_checked
        if plw_request is None:
            return original_forward(*args, **kwargs)
        if not logits_checked:
            check_logits(self, kwargs["input_ids"][:1, :PROBE_TOKENS], forward=original_forward)
            logits_checked = True
        if plw_request.fused_lm_head:
            return _fused_head_forward(self, original_forward, plw_request, args, kwargs)
        return _prompt_weighted_forward(self, plw_request, args, kwargs)

    causal_lm.forward = types.MethodType(forward, causal_lm)
    causal_lm._plw_forward_installed = True
    return causal_lm


def virtual_token_count(masks: LossMasks, args: tuple, kwargs: dict) -> int:
    """How many tokens a wrapper prepended to the sequence the masks describe before it reached this
    forward: PEFT prompt tuning and P-tuning put ``num_virtual_tokens`` learned embeddings in front of
    every row. They are not data, so they hold no target and the masks are aligned past them."""
    inputs = kwargs.get("inputs_embeds")
    if inputs is None:
        inputs = kwargs.get("input_ids", args[0] if args else None)
    if not isinstance(inputs, Tensor):
        return 0
    virtual = inputs.shape[1] - (masks.targets.shape[1] + 1)
    if virtual < 0:
        raise ValueError(
            f"the model received {inputs.shape[1]} positions per row but the batch's labels describe "
            f"{masks.targets.shape[1] + 1}: the prompt loss weight cannot align its masks with the hidden states"
        )
    return virtual


def _fused_head_forward(
    model: nn.Module, original_forward: Any, request: PLWRequest, args: tuple, kwargs: dict
) -> PLWForwardOutput:
    """The framework's fused LM head scores the targets (as labels); the core weights them.

    The framework's forward runs inside the call of the LM head (``call_lm_head``), so that the head it
    reads is whole and its gradient is reduced, however the engine shards it.
    """
    _, head = check_lm_head(model)
    masks = request.masks
    scored = masks.weights(request.loss_weights) > 0
    if request.score_unweighted:
        scored = masks.completion | masks.prompt
    virtual = virtual_token_count(masks, args, kwargs)
    labels = F.pad(torch.where(scored, masks.targets, -100), (1 + virtual, 0), value=-100)
    for key in ("labels", "shift_labels", "num_items_in_batch"):
        kwargs.pop(key, None)

    def score(linear: nn.Linear) -> tuple[Tensor, Tensor, Tensor]:
        outputs = original_forward(*args, labels=labels, fused_lm_head=True, **kwargs)
        return outputs.log_probs, outputs.entropy, outputs.is_top1

    log_probs, entropy, is_top1 = call_lm_head(head, score)
    device = log_probs.device
    masks = masks.to(device)
    result = prompt_weighted_loss_from_token_nll(
        -log_probs[:, virtual:], masks, request.loss_weights, normalizer=request.normalizer,
        scored=scored.to(device),
    )
    entropy_sum = correct_tokens = None
    if request.completion_statistics:
        entropy_sum = (entropy[:, virtual:].detach().float() * masks.completion).sum()
        correct_tokens = (is_top1[:, virtual:] & masks.completion).sum().float()
    return PLWForwardOutput.of(result, entropy_sum, correct_tokens)


def _prompt_weighted_forward(model: nn.Module, request: PLWRequest, args: tuple, kwargs: dict) -> PLWForwardOutput:
    # Looked up on every call: PEFT and FSDP replace modules after construction.
    body, head = check_lm_head(model)
    for key in ("labels", "shift_labels", "num_items_in_batch", "logits_to_keep", "return_dict"):
        kwargs.pop(key, None)
    kwargs["use_cache"] = False
    virtual = virtual_token_count(request.masks, args, kwargs)
    hidden = _last_hidden_state(body(*args, **kwargs))[:, virtual:]

    def weighted_loss(linear: nn.Linear, hidden: Tensor) -> tuple[Tensor | None, ...]:
        # With the model split across devices, the body can end on another device than the head.
        device = linear.weight.device
        hidden = hidden.to(device)
        masks = request.masks.to(device)
        result = prompt_weighted_loss_from_hidden(
            hidden, linear.weight, masks, request.loss_weights, lm_head_bias=linear.bias,
            normalizer=request.normalizer, score_unweighted=request.score_unweighted,
        )
        entropy_sum = correct_tokens = None
        if request.completion_statistics:
            entropy_sum, correct_tokens = completion_token_statistics(hidden, linear.weight, linear.bias, masks)
        output = PLWForwardOutput.of(result, entropy_sum, correct_tokens)
        return tuple(getattr(output, name) for name in OUTPUT_FIELDS)  # engines' hooks follow tuples of tensors

    return PLWForwardOutput(**dict(zip(OUTPUT_FIELDS, call_lm_head(head, weighted_loss, hidden))))
