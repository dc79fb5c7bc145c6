"""Reach the model body's last hidden state and the LM head through the usual wrappers, and give the
model a forward that returns the prompt-weighted loss instead of logits.

The loss must be computed inside the outermost wrapper's ``forward`` (DDP prepares its gradient
reduction there; FSDP gathers parameters there), so this module does what TRL does for its fused LM
head: it replaces the ``forward`` of the causal-LM module with one that, given ``plw_request=...``,
runs the body, hands its last hidden state and the LM head to the core, and returns the core's result.
Without ``plw_request`` the original forward runs, so generation and plain calls are unchanged.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.utils import ModelOutput

from plw_plugins import LossMasks, PLWLoss, prompt_weighted_loss_from_hidden, prompt_weighted_loss_from_token_nll

from .metrics import completion_token_statistics

# Config attributes of architectures whose logits are not ``hidden @ lm_head.weight.T + bias``.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier", "lm_head_multiplier")


@dataclass
class PLWRequest:
    """What the patched forward needs besides the model inputs (a plain object, so that DDP and
    accelerate pass it through untouched)."""

    masks: LossMasks
    prompt_loss_weight: float
    normalizer: Tensor | float | None = None
    score_unweighted: bool = True
    completion_statistics: bool = False
    fused_lm_head: bool = False
    """Score the targets with the framework's fused LM head (TRL >= 1.16 installs one: the model's
    original forward accepts ``fused_lm_head=True`` and returns per-token ``log_probs``)."""


@dataclass
class PLWForwardOutput(ModelOutput):
    """The core's ``PLWLoss`` fields, plus TRL's completion-token statistics when asked for
    (``entropy_sum`` and ``correct_tokens`` over completion targets, else ``None``)."""

    loss: Tensor | None = None
    prompt_loss: Tensor | None = None
    completion_loss: Tensor | None = None
    prompt_tokens: Tensor | None = None
    completion_tokens: Tensor | None = None
    weight_sum: Tensor | None = None
    entropy_sum: Tensor | None = None
    correct_tokens: Tensor | None = None

    def as_plw_loss(self) -> PLWLoss:
        return PLWLoss(
            loss=self.loss, prompt_loss=self.prompt_loss, completion_loss=self.completion_loss,
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, weight_sum=self.weight_sum,
        )


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


def check_lm_head(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """``(body, lm_head)`` of a causal LM whose logits are ``lm_head(body(...).last_hidden_state)``.

    Raises a ``ValueError`` saying what is missing for any model where computing the loss from the
    hidden state and the head's weight would not reproduce the model's own logits.
    """
    name = type(model).__name__
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is None:
        raise ValueError(
            f"{name} has no LM head (get_output_embeddings() returned nothing): the prompt loss weight needs a "
            "causal language model whose logits are the last hidden state times the head's weight"
        )
    if hasattr(head, "base_layer") or not isinstance(head, nn.Linear):
        raise ValueError(
            f"the LM head of {name} is a {type(head).__name__}, not a plain torch.nn.Linear (an adapter or a "
            "quantised layer on the head?): the loss is computed from the head's weight, which would ignore it; "
            "leave the LM head out of the adapter's target modules"
        )
    if not head.weight.is_floating_point():
        raise ValueError(f"the LM head of {name} has {head.weight.dtype} weights; a floating-point head is needed")
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if callable(getattr(config, "get_text_config", None)) else config
    for key in LOGIT_TRANSFORMS:
        value = getattr(text_config, key, None)
        if value not in (None, 1, 1.0):
            raise ValueError(
                f"{name} transforms its logits ({key}={value!r}), which the prompt-weighted loss does not "
                "reproduce; this architecture is not supported"
            )
    body = getattr(model, "base_model", None)
    if not isinstance(body, nn.Module) or body is model:
        raise ValueError(
            f"{name} exposes no model body separate from its LM head (base_model_prefix="
            f"{getattr(model, 'base_model_prefix', None)!r}); the prompt loss weight needs the body's last hidden state"
        )
    return body, head


def install_plw_forward(model: nn.Module) -> nn.Module:
    """Give the causal LM inside ``model`` a forward that accepts ``plw_request``; return that module.

    Idempotent. Checks the LM head first (``check_lm_head``), so that an unsupported model fails at
    construction rather than with a wrong loss.
    """
    causal_lm = unwrap_causal_lm(model)
    check_lm_head(causal_lm)
    if getattr(causal_lm, "_plw_forward_installed", False):
        return causal_lm
    original_forward = causal_lm.forward

    # Keep the original signature: `generate` and column filtering inspect it.
    @functools.wraps(type(causal_lm).forward)
    def forward(self, *args: Any, plw_request: PLWRequest | None = None, **kwargs: Any):
        if plw_request is None:
            return original_forward(*args, **kwargs)
        if plw_request.fused_lm_head:
            return _fused_head_forward(original_forward, plw_request, args, kwargs)
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


def _fused_head_forward(original_forward: Any, request: PLWRequest, args: tuple, kwargs: dict) -> PLWForwardOutput:
    """The framework's fused LM head scores the targets (as labels); the core weights them."""
    masks = request.masks
    scored = masks.weights(request.prompt_loss_weight) > 0
    if request.score_unweighted:
        scored = masks.completion | masks.prompt
    virtual = virtual_token_count(masks, args, kwargs)
    labels = F.pad(torch.where(scored, masks.targets, -100), (1 + virtual, 0), value=-100)
    for key in ("labels", "shift_labels", "num_items_in_batch"):
        kwargs.pop(key, None)
    outputs = original_forward(*args, labels=labels, fused_lm_head=True, **kwargs)
    device = outputs.log_probs.device
    masks = LossMasks(masks.targets.to(device), masks.completion.to(device), masks.prompt.to(device))
    result = prompt_weighted_loss_from_token_nll(
        -outputs.log_probs[:, virtual:], masks, request.prompt_loss_weight, normalizer=request.normalizer,
        scored=scored.to(device),
    )
    entropy_sum = correct_tokens = None
    if request.completion_statistics:
        entropy_sum = (outputs.entropy[:, virtual:].detach().float() * masks.completion).sum()
        correct_tokens = (outputs.is_top1[:, virtual:] & masks.completion).sum().float()
    return PLWForwardOutput(
        loss=result.loss, prompt_loss=result.prompt_loss, completion_loss=result.completion_loss,
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens, weight_sum=result.weight_sum,
        entropy_sum=entropy_sum, correct_tokens=correct_tokens,
    )


def _prompt_weighted_forward(model: nn.Module, request: PLWRequest, args: tuple, kwargs: dict) -> PLWForwardOutput:
    # Looked up on every call: PEFT and FSDP replace modules after construction.
    body, head = check_lm_head(model)
    for key in ("labels", "shift_labels", "num_items_in_batch", "logits_to_keep", "return_dict"):
        kwargs.pop(key, None)
    kwargs["use_cache"] = False
    virtual = virtual_token_count(request.masks, args, kwargs)
    outputs = body(*args, **kwargs)
    hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
    hidden = hidden[:, virtual:]
    # With the model split across devices, the body can end on another device than the head.
    hidden = hidden.to(head.weight.device)
    device = head.weight.device
    masks = LossMasks(request.masks.targets.to(device), request.masks.completion.to(device), request.masks.prompt.to(device))
    result = prompt_weighted_loss_from_hidden(
        hidden, head.weight, masks, request.prompt_loss_weight, lm_head_bias=head.bias,
        normalizer=request.normalizer, score_unweighted=request.score_unweighted,
    )
    entropy_sum = correct_tokens = None
    if request.completion_statistics:
        entropy_sum, correct_tokens = completion_token_statistics(hidden, head.weight, head.bias, masks)
    return PLWForwardOutput(
        loss=result.loss, prompt_loss=result.prompt_loss, completion_loss=result.completion_loss,
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens, weight_sum=result.weight_sum,
        entropy_sum=entropy_sum, correct_tokens=correct_tokens,
    )
