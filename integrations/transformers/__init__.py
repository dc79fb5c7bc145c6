"""The prompt loss weight for any transformers ``Trainer``: shared by the TRL and Axolotl adapters.

Use::

    from plw_plugins.integrations.transformers import PromptLossWeightTrainerMixin

    class MyTrainer(PromptLossWeightTrainerMixin, Trainer):   # the mixin comes first
        pass

``self.args`` must carry ``prompt_loss_weight``, ``prompt_loss_weight_policy`` and
``prompt_loss_weight_final`` (or override ``build_prompt_loss_weight_config``). The batches must hold
``input_ids`` and ``labels`` (-100 where the framework does not train), and may hold
``attention_mask``, ``position_ids`` (packed / padding-free) and ``prompt_mask`` (a truer per-token
prompt mask, as Axolotl can build before padding and packing; it only narrows what counts as prompt).

What the mixin does (stable API):

- ``__init__``: builds ``self.plw_config`` (a validated ``PromptLossWeightConfig``) and gives the
  model a forward that returns the prompt-weighted loss (``install_plw_forward``); a model without a
  plain ``nn.Linear`` LM head and a separate body raises a ``ValueError`` here.
- ``_get_num_items_in_batch(batch_samples, device)``: W, the weight sum over the micro-batches of
  the optimiser step, in place of transformers' label count, summed over data-parallel ranks when
  ``args.average_tokens_across_devices`` (the default). Always counted, whatever
  ``model_accepts_loss_kwargs`` says.
- ``compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None)``: one forward through
  all wrappers (DDP, PEFT, accelerate) into the core's ``prompt_weighted_loss_from_hidden`` with the
  last hidden state and the LM head (no full logits), normalised by ``num_items_in_batch`` (W). It
  multiplies by the world size under ``average_tokens_across_devices`` (DDP averages gradients), and
  undoes ``training_step``'s division by the accumulation steps where transformers would do it
  (``loss_is_scaled_for_ga = True`` on transformers >= 5.19, ``model_accepts_loss_kwargs=False`` before).
- ``log(logs, ...)``: in training, adds the token-weighted ``prompt_loss`` and ``completion_loss``
  (mean NLL) accumulated since the last log over micro-batches and ranks, and ``prompt_loss_weight``.
- ``evaluation_loop(...)`` (behind ``evaluate`` and ``predict``): starts from an empty accumulator and
  adds ``{metric_key_prefix}_prompt_loss`` / ``_completion_loss`` over that call's tokens to its
  metrics: ``eval_...``, ``eval_<name>_...`` for a dict of eval sets, ``test_...`` from ``predict``.
- ``current_prompt_loss_weight()``: ``plw_config.weight_at(global_step / max_steps)``.

Overridable hooks:

- ``build_prompt_loss_weight_config() -> PromptLossWeightConfig``
- ``plw_loss_masks(batch) -> LossMasks``: the one place masks are read (default
  ``plw_plugins.build_loss_masks_from_batch``, which honours ``prompt_mask``).
- ``plw_model_inputs(batch) -> dict``: the batch minus ``BATCH_ONLY_KEYS`` (``labels``, ``prompt_mask``).
- ``plw_record_metrics(output, inputs, mode)``: after every loss, for the framework's own metrics.
- class attribute ``plw_completion_statistics``: also compute entropy / top-1 counts over completion
  targets (``PLWForwardOutput.entropy_sum`` / ``correct_tokens``), as TRL logs them.

Limits: logits must be ``F.linear(last_hidden_state, lm_head.weight, lm_head.bias)``, which is checked
at construction, the head as a structure and a probe run of the head and the model
(``plw_plugins.heads``): no soft-capping or logit scaling, no parameter or buffer in the head besides
its weight and bias (Dory's learned logit scale), no hook changing its output, no adapter on the LM
head; PEFT's ``modules_to_save`` copy of it is fine. DDP, FSDP1/2 and ZeRO-2/3 are handled (the head is read inside its own call);
tensor / context / sequence parallelism are not.
"""

from .lm_head import (
    PLWForwardOutput,
    PLWRequest,
    call_lm_head,
    check_lm_head,
    check_logits,
    install_plw_forward,
    unwrap_causal_lm,
)
from .metrics import completion_token_statistics
from .trainer import (
    BATCH_ONLY_KEYS,
    CONFIG_KEYS,
    PromptLossWeightTrainerMixin,
    prompt_loss_weight_config_from,
    training_progress,
)

__all__ = [
    "BATCH_ONLY_KEYS",
    "CONFIG_KEYS",
    "PLWForwardOutput",
    "PLWRequest",
    "PromptLossWeightTrainerMixin",
    "call_lm_head",
    "check_lm_head",
    "check_logits",
    "completion_token_statistics",
    "install_plw_forward",
    "prompt_loss_weight_config_from",
    "training_progress",
    "unwrap_causal_lm",
]
