"""Checks shared by the core and every adapter, so that bad input fails the same way everywhere:
a ``ValueError`` naming the argument and the value, never a silent no-op or a NaN."""

from __future__ import annotations

import math
import numbers

from torch import Tensor


def validate_prompt_loss_weight(value: object, *, name: str = "prompt_loss_weight") -> float:
    """Return ``value`` as a float in [0, 1], or raise a ``ValueError`` that names it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r} ({type(value).__name__})")
    weight = float(value)
    if math.isnan(weight):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}: not a number")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return weight


def validate_policy_name(value: object, *, name: str = "prompt_loss_weight_policy") -> str:
    """Return ``value`` if it is a string (whether it names a registered policy is checked where the
    registry is read), or raise a ``ValueError`` that names it."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be the name of a policy, got {value!r} ({type(value).__name__})")
    return value


def check_same_shape(name: str, tensor: Tensor, reference_name: str, reference: Tensor) -> None:
    """Raise unless ``tensor`` has the shape of ``reference``."""
    if tuple(tensor.shape) != tuple(reference.shape):
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)} but {reference_name} has shape {tuple(reference.shape)}"
        )
