"""The ``PromptLossWeight`` callback: configuration, schedule, normaliser, checkpoint state and metrics.

A Lightning callback cannot replace the loss a ``training_step`` returns, so the module computes it
through ``PromptLossWeightMixin.prompt_weighted_loss``, which asks this callback for the weight and
the normaliser and hands both to the core. ``lightning.pytorch`` and ``pytorch_lightning`` are
separate class trees and a callback must subclass the ``Callback`` of the trainer it is used with, so
the implementation lives once, in ``PromptLossWeightHooks`` (which imports neither package), and
``bind_callback`` makes one ``PromptLossWeight`` class per package from it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Optional

import torch
from torch import Tensor

from plw_plugins import (
    DEFAULT_PROMPT_LOSS_WEIGHT,
    PromptLossWeightConfig,
    build_loss_masks_from_batch,
    prompt_weighted_loss,
    prompt_weighted_loss_from_hidden,
)
from plw_plugins.config import CONFIG_KEYS, HELP
from plw_plugins.metrics import LossMetrics
from plw_plugins.normalization import AccumulationWindow, scale_gradients

from .mixin import USAGE, PromptLossWeightMixin

STATE_KEY = "plw_plugins.PromptLossWeight"
METRIC_STAGES = ("train", "val", "test")


class PromptLossWeightHooks:
    """Trains prompt tokens at a fractional weight: ``sum_i w_i * nll_i / W`` with ``w_i`` 1 on completion
    tokens and ``prompt_loss_weight`` on prompt tokens.

    Chat batches that carry ``plw_roles`` / ``plw_message_weights`` (rows from
    ``plw_plugins.tokenize_conversation``, batched by ``plw_plugins.collate_conversations``) give system,
    tool, template and earlier-assistant tokens the weights ``system_loss_weight``... and single
    messages their own ``weight``; ``loss_normalization="token_count"`` makes W the count of tokens of
    weight above 0. Those batches also log ``train/system_loss``, ``train/tool_loss``,
    ``train/template_loss`` and ``train/history_loss`` (and ``val/...``, ``test/...``) for the roles present.

    The module returns ``self.prompt_weighted_loss(output, batch)`` (see ``PromptLossWeightMixin``); this
    callback supplies the weight (following ``prompt_loss_weight_policy`` over
    ``trainer.global_step / trainer.estimated_stepping_batches``), sums ``W`` over the data-parallel
    ranks on every training step, saves the schedule's progress in checkpoints, and logs
    ``train/prompt_loss``, ``train/completion_loss``, ``val/...`` and ``test/...``: mean NLLs over an
    epoch's prompt and completion tokens, weighted by tokens, plus ``train/prompt_loss_weight``. With
    several validation or test dataloaders each gets its own pair, under Lightning's suffix
    (``val/prompt_loss/dataloader_idx_1``).

    ``W`` is the weight sum (or token count) of the whole optimiser step: every micro-batch of an
    ``accumulate_grad_batches`` window (the shorter last window of an epoch too) on every rank. Each
    micro-batch's loss is divided by a fixed quantity, and in ``on_before_optimizer_step`` (after AMP's
    unscaling, before gradient clipping) this callback rescales the accumulated gradients to the
    window's ``W``, undoing Lightning's division by the accumulation factor and DDP's averaging. So
    callbacks listed before this one see the gradients before that rescaling, and a term added to
    the returned loss is rescaled with them (by about 1: the first micro-batch's ``W`` times the
    accumulation factor over the window's ``W``). The value a ``training_step`` returns reads as
    the micro-batch's per-token mean on its rank.

    Manual optimisation (``automatic_optimization = False``) is exact under the same rescaling, at
    each ``step()`` of the optimizer from ``self.optimizers()``, over every ``prompt_weighted_loss``
    backpropagated since the previous step, if the module has one optimizer, backpropagates the
    helper's loss as it is (not divided by its own accumulation count), and zeroes the gradients
    after each step.
    """

    computes_prompt_weighted_loss = True  # how PromptLossWeightMixin finds this callback among the Trainer's

    def __init__(
        self,
        prompt_loss_weight: float = DEFAULT_PROMPT_LOSS_WEIGHT,
        prompt_loss_weight_policy: str = "constant",
        prompt_loss_weight_final: Optional[float] = None,
        completion_loss_weight: float = 1.0,
        system_loss_weight: Optional[float] = None,
        tool_loss_weight: Optional[float] = None,
        template_loss_weight: Optional[float] = None,
        history_loss_weight: Optional[float] = None,
        loss_normalization: str = "weight_sum",
    ) -> None:
        super().__init__()
        self.config = PromptLossWeightConfig(
            prompt_loss_weight=prompt_loss_weight,
            prompt_loss_weight_policy=prompt_loss_weight_policy,
            prompt_loss_weight_final=prompt_loss_weight_final,
            completion_loss_weight=completion_loss_weight,
            system_loss_weight=system_loss_weight,
            tool_loss_weight=tool_loss_weight,
            template_loss_weight=template_loss_weight,
            history_loss_weight=history_loss_weight,
            loss_normalization=loss_normalization,
        )
        self.progress = 0.0
        self._weights = self.config.loss_weights_at(0.0)
        self._helper_called = False
        # One accumulator per stage and dataloader: (stage, None) with one dataloader, (stage, index) with several.
        self._metrics: dict[tuple[str, Optional[int]], LossMetrics] = {}
        self._dataloader_idx: Optional[int] = None
        self._window = AccumulationWindow()

    # The Args section comes from the core's help text, the one source of every adapter's key help;
    # LightningCLI reads it for --help.
    __init__.__doc__ = (
        "The prompt loss weight, its policy, the role weights and the normalisation, validated by the core.\n\n"
        "Args:\n" + "".join(f"    {key}: {text}\n" for key, text in HELP.items())
    )

    @property
    def prompt_loss_weight_now(self) -> float:
        """The prompt loss weight the policy gives at the current progress: what the next loss is computed with."""
        return self._weights.prompt

    @property
    def state_key(self) -> str:
        return STATE_KEY

    def compute_loss(self, trainer: Any, output: Any, batch: Mapping[str, Tensor], lm_head: Any = None) -> Tensor:
        """The loss of ``batch``, computed by the core; see ``PromptLossWeightMixin.prompt_weighted_loss``."""
        if not isinstance(batch, Mapping):
            raise ValueError(
                f"prompt_weighted_loss needs the batch as a dict with input_ids and labels, got {type(batch).__name__}"
            )
        masks = build_loss_masks_from_batch(batch)
        weights = self._weights
        stage = _stage(trainer)
        normalizer = None
        if stage == "train":
            self._helper_called = True
            # Every rank reaches this line at every training step, so the window's collectives cannot hang.
            normalizer = self._window.normalizer(masks.weight_sum(weights), _loss_division(trainer))
        if lm_head is None:
            result = prompt_weighted_loss(_logits_of(output), masks, weights, normalizer=normalizer)
        else:
            if not isinstance(lm_head, torch.nn.Module):
                raise ValueError(f"lm_head must be the output layer (an nn.Linear module), got {type(lm_head).__name__}")
            result = prompt_weighted_loss_from_hidden(_hidden_states_of(output), lm_head, masks, weights, normalizer=normalizer)
        if stage in METRIC_STAGES:
            dataloader_idx = None if stage == "train" else self._dataloader_idx
            self._metrics.setdefault((stage, dataloader_idx), LossMetrics()).add(result)
        return self._window.reading(result) if stage == "train" else result.loss

    def _reset_metrics(self, stage: str) -> None:
        self._metrics = {key: metrics for key, metrics in self._metrics.items() if key[0] != stage}
        self._dataloader_idx = None

    def _log_epoch(self, pl_module: Any, stage: str) -> None:
        """Log ``{stage}/prompt_loss``, ``{stage}/completion_loss`` and the role losses present over the
        epoch's tokens, one set per dataloader with Lightning's ``/dataloader_idx_{i}`` suffix when the
        stage has several."""
        # Every rank runs the same epochs over the same dataloaders, so every rank joins each rank sum
        # inside pop(), in the same order.
        indices = sorted(index for key_stage, index in self._metrics if key_stage == stage and index is not None)
        keys = [(stage, index) for index in indices] or [(stage, None)]
        for key in keys:
            metrics = self._metrics.pop(key, None) or LossMetrics()
            suffix = "" if key[1] is None else f"/dataloader_idx_{key[1]}"
            for name, value in metrics.pop(device=pl_module.device).items():
                pl_module.log(
                    f"{stage}/{name}{suffix}", value, on_step=False, on_epoch=True, batch_size=1,
                    add_dataloader_idx=False,
                )

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if not isinstance(pl_module, PromptLossWeightMixin):
            raise TypeError(f"the PromptLossWeight callback needs {type(pl_module).__name__} to compute its loss: {USAGE}")

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._window.reset()
        if not pl_module.automatic_optimization and len(trainer.optimizers) > 1:
            raise ValueError(
                f"{type(pl_module).__name__} uses manual optimisation with {len(trainer.optimizers)} optimizers; the "
                "PromptLossWeight callback rescales the gradients of one optimizer at each of its steps to the W of "
                "every prompt_weighted_loss since the previous step, so it supports one optimizer there"
            )
        if self.config.prompt_loss_weight_policy != "constant" and trainer.estimated_stepping_batches == float("inf"):
            raise ValueError(
                f"prompt_loss_weight_policy={self.config.prompt_loss_weight_policy!r} needs a finite training length "
                "to schedule over: set the Trainer's max_steps or max_epochs"
            )

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._helper_called = False
        self._follow_schedule(trainer)

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Tensor) -> None:
        if trainer.training and not self._helper_called:
            raise RuntimeError(
                f"{type(pl_module).__name__}.training_step returned a loss that prompt_weighted_loss did not compute, "
                f"so the PromptLossWeight callback would train at the wrong prompt loss weight: {USAGE}"
            )

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        factor = self._window.gradient_factor()
        if factor is not None:
            scale_gradients((p for group in optimizer.param_groups for p in group["params"]), factor)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # A tensor filled on the device: logging a Python float would copy it there and synchronise.
        weight = torch.full((), self._weights.prompt, device=pl_module.device)
        pl_module.log("train/prompt_loss_weight", weight, on_step=True, on_epoch=False, batch_size=1)
        # After an optimiser step, so that checkpoints and validation see the weight of the next step.
        self._follow_schedule(trainer)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._reset_metrics("train")

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._log_epoch(pl_module, "train")

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._reset_metrics("val")

    # Lightning passes `dataloader_idx` to batch hooks only when the stage has several dataloaders,
    # exactly when it adds the `/dataloader_idx_{i}` suffix to what the step logs.
    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: Optional[int] = None
    ) -> None:
        self._dataloader_idx = dataloader_idx

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._log_epoch(pl_module, "val")

    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._reset_metrics("test")

    def on_test_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: Optional[int] = None
    ) -> None:
        self._dataloader_idx = dataloader_idx

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._log_epoch(pl_module, "test")

    def state_dict(self) -> dict[str, Any]:
        return {"progress": self.progress, "prompt_loss_weight": self._weights.prompt, "config": self._config_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A checkpoint from before the role keys existed trained with their defaults.
        saved = state_dict.get("config", {})
        saved = saved and {**_config_dict(PromptLossWeightConfig()), **saved}
        if saved and saved != self._config_dict():
            warnings.warn(
                f"the checkpoint was trained with PromptLossWeight {saved}; resuming with {self._config_dict()} "
                "at the checkpoint's schedule progress",
                stacklevel=2,
            )
        self._set_progress(float(state_dict["progress"]))

    def _follow_schedule(self, trainer: Any) -> None:
        # Read live: the trainer restores global_step on resume and may change the accumulation factor.
        if self.config.prompt_loss_weight_policy != "constant":
            self._set_progress(trainer.global_step / max(trainer.estimated_stepping_batches, 1))

    def _set_progress(self, progress: float) -> None:
        self.progress = progress
        self._weights = self.config.loss_weights_at(progress)

    def _config_dict(self) -> dict[str, Any]:
        return _config_dict(self.config)

    def __repr__(self) -> str:
        defaults = _config_dict(PromptLossWeightConfig())
        settings = ", ".join(
            f"{key}={value!r}" for key, value in self._config_dict().items()
            if key in ("prompt_loss_weight", "prompt_loss_weight_policy") or value != defaults[key]
        )
        return f"{type(self).__name__}({settings})"


def bind_callback(callback_base: type, module: str) -> type:
    """``PromptLossWeight``: ``PromptLossWeightHooks`` as a subclass of ``callback_base``, the ``Callback``
    of one Lightning package, importable as ``{module}.PromptLossWeight`` (so that LightningCLI's
    ``class_path`` and pickling find it)."""
    return type(
        "PromptLossWeight",
        (PromptLossWeightHooks, callback_base),
        {"__module__": module, "__qualname__": "PromptLossWeight", "__doc__": PromptLossWeightHooks.__doc__},
    )


def _config_dict(config: PromptLossWeightConfig) -> dict[str, Any]:
    """Every key's value, as checkpoints record them."""
    return {key: getattr(config, key) for key in CONFIG_KEYS}


def _loss_division(trainer: Any) -> int:
    """What Lightning divides the loss a ``training_step`` returns by: the accumulation factor in
    automatic optimisation, nothing in manual optimisation."""
    if not trainer.lightning_module.automatic_optimization:
        return 1
    if trainer.strategy.handles_gradient_accumulation and trainer.accumulate_grad_batches > 1:
        raise ValueError(
            f"accumulate_grad_batches={trainer.accumulate_grad_batches} with {type(trainer.strategy).__name__}, which "
            "accumulates gradients itself: the PromptLossWeight callback cannot rescale them to the window's W; "
            "set accumulate_grad_batches=1 or use a strategy that leaves accumulation to Lightning (ddp, fsdp)"
        )
    return trainer.accumulate_grad_batches


def _stage(trainer: Any) -> str:
    if trainer.training:
        return "train"
    if trainer.validating or trainer.sanity_checking:
        return "val"
    if trainer.testing:
        return "test"
    return "predict"


def _logits_of(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if getattr(output, "last_hidden_state", None) is not None:
        raise ValueError(
            "prompt_weighted_loss got hidden states (last_hidden_state) without an LM head: "
            "pass lm_head=<the model's output layer> for the memory-lean path, or pass the logits"
        )
    raise ValueError(
        "prompt_weighted_loss needs logits [batch, tokens, vocab] as a tensor or an output with .logits "
        f"(a Hugging Face CausalLMOutput), got {type(output).__name__}"
    )


def _hidden_states_of(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, Tensor):
        return hidden
    raise ValueError(
        "with lm_head=, prompt_weighted_loss needs the last hidden states [batch, tokens, hidden] as a tensor or an "
        f"output with .last_hidden_state (the model body's output, e.g. model.model(...)), got {type(output).__name__}"
    )
