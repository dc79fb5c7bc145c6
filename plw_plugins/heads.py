"""The LM head as the memory-lean loss uses it: a linear map, read inside its own call.

The lean loss never builds the logits; it multiplies the hidden states by the head's weight (and
adds its bias) itself. That is the model's own loss only where the head computes exactly
``F.linear(hidden, weight, bias)``. A head that holds a parameter of its own (a learned logit scale
or temperature) or that scales, caps or shifts its output (in an overridden ``forward`` or a forward
hook) would be ignored without a word, so every head is checked twice, because either check alone
misses a case:

- as a structure (``check_head_structure``): a linear layer, floating point, no adapter on it, and no
  trainable parameter or buffer besides its weight and bias. This catches a learned scale while it is
  still exactly 1, as at initialisation, where the head's output cannot tell;
- as a function (``check_head_function``, or ``head_call_problem`` on a call recorded inside a larger
  forward): on a probe input the head's output equals ``F.linear`` of its weight and bias, computed
  inside the same call.

The head may be a wrapper that calls one ``torch.nn.Linear``: an FSDP unit, PEFT's
``modules_to_save`` copy. Sharding engines make its parameters whole only inside its call, and
wrappers choose which linear layer runs, so the weight is read there (``call_lm_head``).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PROBE_ROWS = 8
"""Hidden states the function check runs the head on."""

UNSUPPORTED = "this architecture is not supported"


class LinearCall:
    """What one linear layer of a head was given and what ``F.linear`` of its weight and bias gives."""

    def __init__(self, linear: nn.Linear, hidden: Tensor) -> None:
        self.layer = type(linear).__name__
        self.input = hidden.detach()
        self.plain_output = F.linear(hidden, linear.weight, linear.bias).detach()


def linear_layers(head: nn.Module) -> list[nn.Linear]:
    """The ``torch.nn.Linear`` layers inside ``head`` (the head itself, where it is one)."""
    return [module for module in head.modules() if isinstance(module, nn.Linear)]


def check_head_structure(head: nn.Module, owner: str | None = None) -> None:
    """Raise a ``ValueError`` naming the head's class (and ``owner``, the model's) unless ``head`` is
    built as a plain linear map: a floating-point ``torch.nn.Linear`` (or a wrapper of one), no adapter
    (LoRA) on it, and no trainable parameter or buffer besides the linear layers' weights and biases."""
    subject = _subject(head, owner)
    linears = linear_layers(head)
    adapters = [module for module in head.modules() if hasattr(module, "base_layer")]
    if adapters or not linears:
        what = type(adapters[0] if adapters else head).__name__
        raise ValueError(
            f"{subject} is a {what}, not a plain torch.nn.Linear (an adapter or a quantised layer on the "
            "head?): the loss is computed from the head's weight, which would ignore it; leave the LM head out of the "
            "adapter's target modules (training a full copy of it with modules_to_save=['lm_head'] is supported)"
        )
    for linear in linears:
        if not linear.weight.is_floating_point():
            raise ValueError(f"{subject} has {linear.weight.dtype} weights; a floating-point head is needed")
    used = {id(tensor) for linear in linears for tensor in (linear.weight, linear.bias) if tensor is not None}
    extras = [("parameter", name) for name, parameter in head.named_parameters()
              if parameter.requires_grad and id(parameter) not in used and not getattr(parameter, "_is_flat_param", False)]
    extras += [("buffer", name) for name, _ in head.named_buffers()]
    if extras:
        kind, name = extras[0]
        raise ValueError(
            f"{subject} holds the {kind} {name!r} besides its linear layer's weight and "
            "bias, which the prompt-weighted loss (computed from the hidden state, the weight and the bias) would "
            f"neither apply nor train; {UNSUPPORTED}"
        )


@contextmanager
def recorded_linear_calls(head: nn.Module) -> Iterator[list[LinearCall]]:
    """Inside the block every linear layer of ``head`` runs its own forward as usual and records a
    ``LinearCall`` (computed inside the layer's call, where an engine has made its parameters whole)."""
    calls: list[LinearCall] = []

    def recording(linear: nn.Linear, own_forward: Callable[..., Any]) -> Callable[..., Any]:
        def forward(hidden: Tensor, *args: Any, **kwargs: Any) -> Any:
            calls.append(LinearCall(linear, hidden))
            return own_forward(hidden, *args, **kwargs)
        return forward

    with _linear_forwards(head, recording):
        yield calls


def head_call_problem(calls: list[LinearCall], head_input: Tensor, head_output: Any) -> str | None:
    """What makes one recorded call of a head, given ``head_input``, return ``head_output`` other than
    ``F.linear`` of its weight and bias, or ``None`` where it computes exactly that."""
    if len(calls) != 1:
        return f"one call of it ran {len(calls)} linear layers, not one"
    call = calls[0]
    if not isinstance(head_output, Tensor) or head_output.shape != call.plain_output.shape:
        shape = tuple(head_output.shape) if isinstance(head_output, Tensor) else type(head_output).__name__
        return f"its output is {shape}, its linear layer's {tuple(call.plain_output.shape)}"
    if call.input.shape != head_input.shape or not _close(call.input, head_input, rtol=1e-3):
        return "it transforms its input before its linear layer"
    if not _close(head_output.detach(), call.plain_output, rtol=1e-4):
        return f"its output is its linear layer's {describe_difference(call.plain_output.float(), head_output.float())}"
    return None


_functions_checked: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


def check_head_function(head: nn.Module, hidden_states: Tensor, owner: str | None = None) -> None:
    """Raise a ``ValueError`` naming the head's class (and ``owner``) unless ``head`` computes ``F.linear(h, weight, bias)``
    on a few of ``hidden_states``. Run once per head and set of hooks (the check is repeated when a
    hook is added or removed)."""
    state = _hook_state(head)
    if _functions_checked.get(head) == state:
        return
    probe = hidden_states.detach().reshape(-1, hidden_states.shape[-1])[:PROBE_ROWS]
    with torch.no_grad(), recorded_linear_calls(head) as calls:
        output = head(probe)
    problem = head_call_problem(calls, probe, output)
    if problem:
        raise head_function_error(head, problem, owner)
    _functions_checked[head] = state


def head_function_error(head: nn.Module, problem: str, owner: str | None = None) -> ValueError:
    """The error for a head that does not compute ``F.linear`` of its weight and bias, and why."""
    return ValueError(f"{_subject(head, owner)} does not compute F.linear(hidden, weight, bias): {problem}, which the "
                      f"prompt-weighted loss does not reproduce; {UNSUPPORTED}")


def call_lm_head(lm_head: nn.Module, compute: Callable[..., Any], *inputs: Any) -> Any:
    """Call ``lm_head(*inputs)`` with ``compute(linear, *inputs)`` in place of its linear layer's forward.

    The loss reads the head's weight instead of building the logits, but it must do so inside the
    head's call: sharding engines make a module's parameters whole only there (an FSDP unit gathers
    them before its forward and reduces their gradients after its backward; ZeRO-3 gathers them before
    the forward and again before the backward of the module's outputs), and wrappers choose which
    linear layer runs (PEFT's ``modules_to_save`` runs its trained copy). ``compute`` returns a tensor
    or a tuple of tensors and ``None``s, which the engines' hooks can follow.
    """
    with _linear_forwards(lm_head, lambda linear, _: functools.partial(compute, linear)):
        return lm_head(*inputs)


def describe_difference(expected: Tensor, actual: Tensor) -> str:
    """How ``actual`` differs from ``expected``: a multiple of it, or not (as soft-capping makes it)."""
    scale = (expected * actual).sum() / (expected * expected).sum().clamp(min=torch.finfo(torch.float32).tiny)
    if torch.allclose(actual, scale * expected, rtol=1e-3, atol=1e-3):
        return f"multiplied by {scale.item():.4g}"
    return (f"not a multiple: values of up to {expected.abs().max().item():.4g} become up to "
            f"{actual.abs().max().item():.4g}, as soft-capping does")


@contextmanager
def _linear_forwards(head: nn.Module, replacement: Callable[[nn.Linear, Callable[..., Any]], Callable[..., Any]]):
    """Give every linear layer of ``head`` the forward ``replacement(linear, its own forward)`` inside the block."""
    linears = linear_layers(head)
    own_forwards = [linear.__dict__.get("forward") for linear in linears]
    for linear, own in zip(linears, own_forwards):
        linear.forward = replacement(linear, own or _class_forward(linear))
    try:
        yield
    finally:
        for linear, own in zip(linears, own_forwards):
            if own is None:
                del linear.forward
            else:
                linear.forward = own


def _class_forward(linear: nn.Linear) -> Callable[..., Any]:
    """The layer's class forward, bound to it: what runs where no instance forward is set."""
    return type(linear).forward.__get__(linear)


def _subject(head: nn.Module, owner: str | None) -> str:
    return f"{owner}: its LM head ({type(head).__name__})" if owner else f"the LM head {type(head).__name__}"


def _close(a: Tensor, b: Tensor, rtol: float) -> bool:
    a, b = a.float(), b.float().to(a.device)
    if b.numel() == 0:
        return True
    return torch.allclose(a, b, rtol=rtol, atol=rtol * b.abs().max().item() + 1e-7)


def _hook_state(head: nn.Module) -> tuple:
    return tuple((id(module), type(module), tuple(module._forward_hooks), tuple(module._forward_pre_hooks),
                  "forward" in module.__dict__) for module in head.modules())
