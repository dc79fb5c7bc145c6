"""What part of a conversation each token belongs to, and the weights of one optimiser step.

The host framework's labels still decide which tokens it trains (completion) and which it masks
(prompt). A *role* refines that: a token of a system message, of a tool result, of the chat
template's scaffolding, or of an assistant turn before the last one can carry its own weight.
Roles reach the core as the batch key ``plw_roles`` (one ``Role`` code per input token), and
per-message weights from the data as ``plw_message_weights`` (the message's ``weight`` on each of
its tokens, ``NO_MESSAGE_WEIGHT`` elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .validation import validate_prompt_loss_weight

ROLES_KEY = "plw_roles"
MESSAGE_WEIGHTS_KEY = "plw_message_weights"
PROMPT_CONTENT_KEY = "plw_prompt_content"
"""A dataset column of text prompt-completion rows whose prompt a text template wrote: the ``[start,
end)`` character ranges of ``prompt`` the data filled in; the rest of the prompt is ``TEMPLATE``."""
NO_MESSAGE_WEIGHT = -1.0
"""The value of ``plw_message_weights`` on tokens whose message has no ``weight`` (and on padding)."""


class Role(IntEnum):
    """The role of one input token. ``PROMPT`` is the default: user turns, prompt-completion prompts,
    and any token no other role covers."""

    PROMPT = 0
    COMPLETION = 1
    SYSTEM = 2
    TOOL = 3
    TEMPLATE = 4
    HISTORY = 5


METRIC_ROLES = (Role.SYSTEM, Role.TOOL, Role.TEMPLATE, Role.HISTORY)
"""The roles that get a metric of their own (``system_loss``...) besides ``prompt_loss`` / ``completion_loss``."""


def role_metric_name(role: Role) -> str:
    """``system_loss``, ``tool_loss``, ``template_loss``, ``history_loss``."""
    return f"{role.name.lower()}_loss"


LOSS_NORMALIZATIONS = ("weight_sum", "token_count")
"""``weight_sum``: W is the sum of the weights over the optimiser step. ``token_count``: W counts the
tokens of weight above 0 over the step (WIT, arXiv 2507.07817)."""


def validate_loss_normalization(value: object, *, name: str = "loss_normalization") -> str:
    """Return ``value`` if it names a normalisation, or raise a ``ValueError`` that names it."""
    if not isinstance(value, str) or value not in LOSS_NORMALIZATIONS:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, LOSS_NORMALIZATIONS))}, got {value!r} ({type(value).__name__})"
        )
    return value


def validate_completion_loss_weight(value: object, *, name: str = "completion_loss_weight") -> float:
    """Return ``value`` as a float in (0, 1]: a completion weight of 0 would train nothing the host trains."""
    weight = validate_prompt_loss_weight(value, name=name)
    if weight == 0.0:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}: at 0 no completion token would be trained")
    return weight


def validate_message_weight(value: object, *, row: object, message: int) -> float:
    """A message's ``weight`` from the data as a float in [0, 1], or a ``ValueError`` naming the row,
    the message index and the value."""
    try:
        return validate_prompt_loss_weight(value, name="weight")
    except ValueError as error:
        raise ValueError(f"row {row}, message {message}: {error}") from None


@dataclass(frozen=True)
class LossWeights:
    """The weights of one optimiser step (a schedule moves ``prompt``; the others stay).

    ``system``, ``tool`` and ``template`` weigh the tokens of that role that the host masks; unset
    (``None``), those tokens take ``prompt``. ``history`` weighs every token of an earlier assistant
    turn, trained or masked; unset, they take ``completion`` or ``prompt`` as the host labels them.
    A message's own ``weight`` (``plw_message_weights``) overrides all of these for its tokens.
    """

    prompt: float
    completion: float = 1.0
    system: float | None = None
    tool: float | None = None
    template: float | None = None
    history: float | None = None
    normalization: str = "weight_sum"

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt", validate_prompt_loss_weight(self.prompt))
        object.__setattr__(self, "completion", validate_completion_loss_weight(self.completion))
        for role in ("system", "tool", "template", "history"):
            value = getattr(self, role)
            if value is not None:
                object.__setattr__(self, role, validate_prompt_loss_weight(value, name=f"{role}_loss_weight"))
        validate_loss_normalization(self.normalization)

    @classmethod
    def of(cls, weights: float | LossWeights) -> LossWeights:
        """``weights`` itself, or a bare prompt loss weight with every other weight at its default."""
        return weights if isinstance(weights, LossWeights) else cls(prompt=weights)

    def masked_role_weights(self) -> dict[Role, float]:
        """The set weights of roles that apply to masked tokens only."""
        pairs = ((Role.SYSTEM, self.system), (Role.TOOL, self.tool), (Role.TEMPLATE, self.template))
        return {role: weight for role, weight in pairs if weight is not None}

    def largest(self) -> float:
        """The largest weight any prompt-side token can get from these settings."""
        values = (self.prompt, self.system, self.tool, self.template, self.history)
        return max(value for value in values if value is not None)
