"""plw-plugins: a fractional prompt loss weight for causal-LM fine-tuning.

One loss, ``sum_i w_i * nll_i / W`` with ``w_i`` 1 on completion tokens, ``prompt_loss_weight`` on
prompt tokens and 0 elsewhere, and ``W`` the weight sum of the optimiser step. Framework adapters
live in ``plw_plugins.integrations``; this package imports no host framework.
"""

from .config import DEFAULT_PROMPT_LOSS_WEIGHT, PromptLossWeightConfig
from .hookspecs import hookimpl
from .loss import PLWLoss, prompt_weighted_loss, prompt_weighted_loss_from_hidden, prompt_weighted_loss_from_token_nll
from .masks import IGNORE_INDEX, LossMasks, build_loss_masks, build_loss_masks_from_batch
from .normalization import step_weight_sum, sum_across_ranks
from .plugins import weight_policies
from .validation import validate_prompt_loss_weight

__all__ = [
    "DEFAULT_PROMPT_LOSS_WEIGHT",
    "IGNORE_INDEX",
    "LossMasks",
    "PLWLoss",
    "PromptLossWeightConfig",
    "build_loss_masks",
    "build_loss_masks_from_batch",
    "hookimpl",
    "prompt_weighted_loss",
    "prompt_weighted_loss_from_hidden",
    "prompt_weighted_loss_from_token_nll",
    "step_weight_sum",
    "sum_across_ranks",
    "validate_prompt_loss_weight",
    "weight_policies",
]
__version__ = "0.1.0"
