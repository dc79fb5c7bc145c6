"""How the loss's weight splits over the roles of a dataset's tokens at given weights: the share of
the system prompt, the template, the user turns, the completions... as the trainer weights them.

Every next-token target of a row (every token but its first) falls in one *class*: its ``Role``,
whether the host trains it (its label is kept) and its message's ``weight`` from the data. A class's
weight comes from the core's own rule (``LossMasks.weights``), so that the shares are what the loss
computes, and the share of a role is ``sum of its targets' weights / W``. The shares do not depend on
``loss_normalization``: both normalisations divide every token's weight by the same ``W``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from plw_plugins.config import DEFAULT_PROMPT_LOSS_WEIGHT, validate_config_value
from plw_plugins.masks import LossMasks
from plw_plugins.roles import LossWeights, Role

TargetClass = tuple[int, bool, float]
"""A ``Role`` code, whether the host trains the target, and its message's weight (``NO_MESSAGE_WEIGHT``
where none)."""

WEIGHT_KEYS = {
    "prompt_loss_weight": "prompt",
    "completion_loss_weight": "completion",
    "system_loss_weight": "system",
    "tool_loss_weight": "tool",
    "template_loss_weight": "template",
    "history_loss_weight": "history",
}
"""The configuration keys ``plw-plugins stats`` takes on its command line, and their ``LossWeights`` field."""

ROLE_ORDER = (Role.SYSTEM, Role.PROMPT, Role.TOOL, Role.TEMPLATE, Role.HISTORY, Role.COMPLETION)
SHARE = {"digits": 3}


@dataclass
class RoleShare:
    """One role's next-token targets, their mean weight and their share of the loss's total weight."""

    targets: int
    weight: float = field(metadata=SHARE)
    share: float = field(metadata=SHARE)


def loss_weights_from_keys(values: Mapping[str, Any]) -> LossWeights:
    """``LossWeights`` from configuration keys (``prompt_loss_weight``...; a missing or ``None`` value is
    the key's default), each checked by the core: a ``ValueError`` names the key and the value. A
    string (from the command line) is read as a number first, so that ``"0.1"`` is 0.1 and ``"x"``
    fails as ``"x"``."""
    checked = {}
    for key, name in WEIGHT_KEYS.items():
        value = values.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        checked[name] = validate_config_value(key, value)
    checked.setdefault("prompt", DEFAULT_PROMPT_LOSS_WEIGHT)
    return LossWeights(**checked)


def class_weights(classes: list[TargetClass], weights: LossWeights) -> list[float]:
    """The weight of each target class under ``weights``, by the core's rule (see ``LossWeights``)."""
    if not classes:
        return []
    roles, trained, message_weights = zip(*classes)
    trained_mask = torch.tensor(trained, dtype=torch.bool)
    masks = LossMasks(
        targets=torch.zeros(len(classes), dtype=torch.long),
        completion=trained_mask,
        prompt=~trained_mask,
        roles=torch.tensor(roles, dtype=torch.long),
        message_weights=torch.tensor(message_weights, dtype=torch.float32),
    )
    return masks.weights(weights).double().tolist()


def loss_shares(counts: Counter, weights: LossWeights) -> dict[str, RoleShare]:
    """Per role present in ``counts`` (targets by ``TargetClass``), in ``ROLE_ORDER`` and keyed by the
    role's name (``system``, ``prompt``...): its targets, their mean weight and its share of the
    total weight (0 where every weight is 0)."""
    classes = [key for key, count in counts.items() if count]
    weighted: Counter = Counter()
    targets: Counter = Counter()
    for key, weight in zip(classes, class_weights(classes, weights)):
        weighted[key[0]] += weight * counts[key]
        targets[key[0]] += counts[key]
    total = sum(weighted.values())
    return {
        Role(role).name.lower(): RoleShare(targets[role], weighted[role] / targets[role], weighted[role] / total if total else 0.0)
        for role in ROLE_ORDER
        if targets[role]
    }
