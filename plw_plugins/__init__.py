"""plw-plugins: a fractional prompt loss weight for causal-LM fine-tuning.

One loss, ``sum_i w_i * nll_i / W`` with ``w_i`` 1 on completion tokens, ``prompt_loss_weight`` on
prompt tokens and 0 elsewhere, and ``W`` the weight sum of the optimiser step. In chat data the
system, tool, template and earlier-assistant tokens and single messages can have weights of their own
(``roles.py``, ``conversations.py``). Framework adapters
live in ``plw_plugins.integrations``; this package imports no host framework.
"""

from .config import DEFAULT_PROMPT_LOSS_WEIGHT, PromptLossWeightConfig
from .conversations import collate_conversations, conversation_roles, tokenize_conversation
from .hookspecs import hookimpl
from .loss import PLWLoss, prompt_weighted_loss, prompt_weighted_loss_from_hidden, prompt_weighted_loss_from_token_nll
from .masks import IGNORE_INDEX, LossMasks, build_loss_masks, build_loss_masks_from_batch
from .normalization import step_weight_sum, sum_across_ranks
from .plugins import weight_policies
from .roles import LossWeights, Role
from .validation import validate_prompt_loss_weight

__all__ = [
    "DEFAULT_PROMPT_LOSS_WEIGHT",
    "IGNORE_INDEX",
    "LossMasks",
    "LossWeights",
    "PLWLoss",
    "PromptLossWeightConfig",
    "Role",
    "build_loss_masks",
    "build_loss_masks_from_batch",
    "collate_conversations",
    "conversation_roles",
    "hookimpl",
    "prompt_weighted_loss",
    "prompt_weighted_loss_from_hidden",
    "prompt_weighted_loss_from_token_nll",
    "step_weight_sum",
    "sum_across_ranks",
    "tokenize_conversation",
    "validate_prompt_loss_weight",
    "weight_policies",
]
__version__ = "0.1.0"
