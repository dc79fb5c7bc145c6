"""``PromptLossWeightTrainerMixin``: the prompt loss weight for any transformers ``Trainer`` subclass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import transformers
from torch import Tensor, nn

from plw_plugins import LossMasks, PromptLossWeightConfig, build_loss_masks_from_batch, sum_across_ranks
from plw_plugins.config import CONFIG_KEYS
from plw_plugins.metrics import LossMetrics
from plw_plugins.normalization import data_parallel_world_size
from plw_plugins.roles import MESSAGE_WEIGHTS_KEY, ROLES_KEY, LossWeights

from .lm_head import PLWForwardOutput, PLWRequest, install_plw_forward

BATCH_ONLY_KEYS = ("labels", "prompt_mask", ROLES_KEY, MESSAGE_WEIGHTS_KEY)
"""Batch keys that feed the loss masks but are not model inputs."""

PAST_KEY_VALUE_PEFT_TYPES = ("PREFIX_TUNING", "CARTRIDGE")
"""PEFT methods that feed their virtual tokens to the model as past key values."""


def prompt_loss_weight_config_from(args: Any) -> PromptLossWeightConfig:
    """The validated ``PromptLossWeightConfig`` of a training-arguments object carrying its keys."""
    missing = [key for key in CONFIG_KEYS if not hasattr(args, key)]
    if missing:
        raise ValueError(
            f"{type(args).__name__} has no {', '.join(missing)}: use training arguments that carry the prompt loss "
            "weight keys (PLWSFTConfig for TRL, the Axolotl plugin's arguments for Axolotl)"
        )
    return PromptLossWeightConfig(**{key: getattr(args, key) for key in CONFIG_KEYS})


def check_peft_method(model: Any) -> None:
    """Raise for a PEFT method the prompt-weighted loss cannot train: prefix tuning hands its virtual
    tokens to the model as past key values, which a forward without a cache (TRL's, and the loss's)
    drops; stock ``SFTTrainer`` fails on it too. Prompt tuning and P-tuning, which prepend them to
    the input embeddings, are supported."""
    while isinstance(getattr(model, "module", None), nn.Module):  # DDP / accelerate wrappers
        model = model.module
    peft_type = getattr(getattr(model, "active_peft_config", None), "peft_type", None)
    if peft_type in PAST_KEY_VALUE_PEFT_TYPES:
        raise ValueError(
            f"peft_config: {getattr(peft_type, 'value', peft_type)} is not supported with the prompt loss weight: "
            "it passes its virtual tokens as past key values, which training without a cache drops (stock "
            "SFTTrainer cannot train it either); use prompt tuning (PromptTuningConfig), P-tuning "
            "(PromptEncoderConfig), LoRA or another adapter"
        )


def training_progress(global_step: int, max_steps: int) -> float:
    """Fraction of training done, in [0, 1] (0 before the number of steps is known)."""
    return min(max(global_step / max_steps, 0.0), 1.0) if max_steps > 0 else 0.0


class PromptLossWeightTrainerMixin:
    """Put first in the bases of a transformers ``Trainer`` subclass: ``class T(PromptLossWeightTrainerMixin, Trainer)``.

    See the package docstring for what each method does and which to override.
    """

    # transformers >= 5.19 reads this: `compute_loss` already normalises over the whole accumulation window.
    loss_is_scaled_for_ga = True
    # Whether `plw_forward` also computes TRL's entropy / accuracy over completion tokens.
    plw_completion_statistics = False
    # Whether the framework installed a fused LM head on the model that scores the targets (TRL >= 1.16).
    plw_fused_lm_head = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plw_config = self.build_prompt_loss_weight_config()
        check_peft_method(self.model)
        install_plw_forward(self.model)
        self._plw_metrics = {"train": LossMetrics(), "eval": LossMetrics()}
        self._plw_last_train_weight: float | None = None
        self._plw_logits_wanted = True

    # ---- what subclasses may override -------------------------------------------------------

    def build_prompt_loss_weight_config(self) -> PromptLossWeightConfig:
        """The configuration; by default read from ``self.args`` (``prompt_loss_weight`` and the policy keys)."""
        return prompt_loss_weight_config_from(self.args)

    def plw_loss_masks(self, batch: Mapping[str, Tensor]) -> LossMasks:
        """Completion and prompt targets of one collated batch. The default reads ``input_ids``,
        ``labels`` and whichever of ``attention_mask``, ``position_ids``, ``prompt_mask`` it holds."""
        return build_loss_masks_from_batch(batch)

    def plw_model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch minus the keys that only feed the loss masks (``labels``, ``prompt_mask``)."""
        return {key: value for key, value in batch.items() if key not in BATCH_ONLY_KEYS}

    def plw_record_metrics(self, output: PLWForwardOutput, inputs: Mapping[str, Any], mode: str) -> None:
        """Called after every loss computation, for framework metrics (TRL's entropy...). No-op here."""

    # ---- the prompt loss weight ---------------------------------------------------------------

    def current_prompt_loss_weight(self) -> float:
        """The prompt loss weight at the current training progress (``global_step / max_steps``)."""
        return self.plw_config.weight_at(training_progress(self.state.global_step, self.state.max_steps))

    def current_loss_weights(self) -> LossWeights:
        """Every weight at the current training progress: the scheduled prompt loss weight, the role
        weights and the normalisation."""
        return self.plw_config.loss_weights_at(training_progress(self.state.global_step, self.state.max_steps))

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> Tensor | None:
        """W, the weight sum over this optimiser step's micro-batches, in place of the label count;
        summed over ranks under ``average_tokens_across_devices``, as transformers sums its count."""
        batches = [batch for batch in batch_samples if isinstance(batch, Mapping) and "labels" in batch]
        if not batches:
            return None
        weights = self.current_loss_weights()
        total = sum(self.plw_loss_masks(batch).weight_sum(weights).to(device) for batch in batches)
        if self.args.average_tokens_across_devices:
            total = sum_across_ranks(total)
        return total

    # ---- the loss -----------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ):
        """``sum_i w_i * nll_i / W`` through the core, W being ``num_items_in_batch`` (this batch's
        own weight sum when None), scaled as transformers scales its own loss."""
        output = self.plw_forward(model, inputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        if mode == "train":
            self._plw_metrics[mode].add(output.as_plw_loss())
        else:
            self._add_evaluation_metrics(model, inputs, output)
        self.plw_record_metrics(output, inputs, mode)

        loss = output.loss
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # W counts every rank's tokens and DDP averages the gradients across ranks.
            loss = loss * data_parallel_world_size()
        if self.model.training and self._trainer_divides_by_accumulation(num_items_in_batch):
            loss = loss * self.current_gradient_accumulation_steps
        if return_outputs:
            if not self._plw_logits_wanted:
                return loss, {"loss": loss}
            # The loss path builds no logits; `compute_metrics` and `predict` need them.
            with torch.no_grad():
                return loss, model(**self.plw_model_inputs(inputs))
        return loss

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys=None):
        """transformers asks ``compute_loss`` for outputs even when only the loss is kept; say when the
        logits (a second, full forward pass) are not needed."""
        self._plw_logits_wanted = not prediction_loss_only
        try:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        finally:
            self._plw_logits_wanted = True

    def _add_evaluation_metrics(self, model: nn.Module, inputs: Mapping[str, Any], output: PLWForwardOutput) -> None:
        """Accumulate an evaluation batch's metrics over the rows the host's own loss keeps.

        In distributed evaluation accelerate fills the last batch of an uneven dataset with repeated
        samples, which ``gather_for_metrics`` drops from the trainer's loss: the first ``remainder``
        rows of the last batch gathered in rank order are real. Only then is a rank's batch partly
        repeated, and its real rows are scored again, alone (one extra forward per evaluation)."""
        state = self.accelerator.gradient_state
        rows = inputs["input_ids"].shape[0]
        kept = rows
        if self.accelerator.num_processes > 1 and state.end_of_dataloader and state.remainder > 0:
            kept = min(max(state.remainder - self.accelerator.process_index * rows, 0), rows)
        if kept == rows:
            self._plw_metrics["eval"].add(output.as_plw_loss())
        elif kept > 0:
            real = {key: value[:kept] if isinstance(value, Tensor) and value.shape[:1] == (rows,) else value
                    for key, value in inputs.items()}
            self._plw_metrics["eval"].add(self.plw_forward(model, real, None).as_plw_loss())

    def plw_forward(self, model: nn.Module, inputs: Mapping[str, Any], normalizer: Tensor | int | None) -> PLWForwardOutput:
        """One forward through ``model`` (and all its wrappers) returning the core's loss and metrics."""
        if "labels" not in inputs or "input_ids" not in inputs:
            raise ValueError(
                f"the prompt loss weight needs input_ids and labels in every batch; this batch has {', '.join(sorted(inputs))}"
            )
        weights = self.current_loss_weights()
        if self.model.training:
            self._plw_last_train_weight = weights.prompt
        request = PLWRequest(
            masks=self.plw_loss_masks(inputs),
            loss_weights=weights,
            normalizer=normalizer,
            completion_statistics=self.plw_completion_statistics,
            fused_lm_head=self.plw_fused_lm_head,
        )
        return model(**self.plw_model_inputs(inputs), plw_request=request)

    def _trainer_divides_by_accumulation(self, num_items_in_batch: Tensor | int | None) -> bool:
        """Whether ``Trainer.training_step`` will divide our loss by the accumulation steps."""
        if "loss_is_scaled_for_ga" in vars(transformers.Trainer):
            return not self.loss_is_scaled_for_ga
        # transformers < 5.19 divides unless the model took `num_items_in_batch` or a `compute_loss_func` ran.
        return (not self.model_accepts_loss_kwargs or num_items_in_batch is None) and self.compute_loss_func is None

    # ---- metrics ------------------------------------------------------------------------------

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> Any:
        """The loop behind ``evaluate`` and ``predict``: adds ``{metric_key_prefix}_prompt_loss`` and
        ``{metric_key_prefix}_completion_loss`` over this call's tokens alone to its metrics, under the
        prefix the trainer gives the call (``eval``, ``eval_<name>`` for a dict of eval sets, ``test``
        for ``predict``), so that ``evaluate`` logs and returns them and ``metric_for_best_model`` finds them."""
        self._plw_metrics["eval"].reset()
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only=prediction_loss_only, ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        for key, value in self._plw_metrics["eval"].pop(device=self.args.device).items():
            output.metrics[f"{metric_key_prefix}_{key}"] = value
        return output

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """In training, add ``prompt_loss`` / ``completion_loss`` since the last log and the
        ``prompt_loss_weight`` of the last step to the trainer's own metrics (evaluation adds its
        own in ``evaluation_loop``)."""
        if self.model.training:
            logs.update(self._plw_metrics["train"].pop(device=self.args.device))
            last = self._plw_last_train_weight
            logs["prompt_loss_weight"] = self.current_prompt_loss_weight() if last is None else last
        super().log(logs, *args, **kwargs)
