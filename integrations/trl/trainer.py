"""``PLWSFTTrainer``: TRL's ``SFTTrainer`` with a fractional prompt loss weight.

TRL turns its completion / assistant masks into ``labels == -100`` during dataset preparation, so
the prompt reaches ``compute_loss`` only as masked real tokens: the shared transformers mixin reads
them from ``input_ids``, ``labels`` and ``attention_mask`` / ``position_ids``, and normalises by W
over the whole optimiser step. This class adds what is TRL's own: the checks of its arguments and
data, and its entropy / token-accuracy / token-count metrics (over completion tokens, as TRL logs them).

Where TRL installs its fused LM head (1.16 and later: per-token log-probabilities computed in chunks,
with Triton on GPUs), the prompt and completion targets are scored by it and the core weights them
(``prompt_weighted_loss_from_token_nll``); on older TRL the core's ``prompt_weighted_loss_from_hidden``
scores them. Neither materialises the full logits.
"""

from __future__ import annotations

import copy
from itertools import islice
from typing import Any

from datasets import Dataset
from trl import SFTTrainer
from trl.trainer import utils as trl_utils

from plw_plugins import IGNORE_INDEX
from plw_plugins.integrations.transformers import PLWForwardOutput, PromptLossWeightTrainerMixin
from plw_plugins.masks import row_has_weighted_prompt

from .config import PLWSFTConfig

ROWS_CHECKED = 32
"""Rows of the prepared training set checked for prompt tokens at construction."""


class PLWSFTTrainer(PromptLossWeightTrainerMixin, SFTTrainer):
    """``SFTTrainer`` whose loss weights prompt tokens by ``args.prompt_loss_weight`` (see ``PLWSFTConfig``)."""

    _tag_names = ["trl", "sft", "plw-plugins"]
    plw_completion_statistics = True
    plw_fused_lm_head = hasattr(trl_utils, "add_fused_lm_head")

    def __init__(self, model: Any, args: PLWSFTConfig | None = None, *rest: Any, **kwargs: Any) -> None:
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = PLWSFTConfig(f"{str(name).split('/')[-1]}-SFT")
        _check_arguments(args, kwargs.get("compute_loss_func"))
        super().__init__(model, args, *rest, **kwargs)
        if getattr(self, "aux_loss_enabled", False):
            raise ValueError(
                "router_aux_loss_coef: the MoE load-balancing loss is not supported with the prompt loss weight; "
                "set router_aux_loss_coef=0.0"
            )
        self._check_prompt_tokens()

    def _check_prompt_tokens(self) -> None:
        """Raise when the prepared training data has no masked token: then every token is already
        trained at weight 1 and the prompt loss weight would change nothing."""
        dataset = self.train_dataset
        if dataset is None:
            return
        rows = list(islice(iter(dataset), ROWS_CHECKED))
        if not rows or "labels" not in rows[0] or any(-100 in row["labels"] for row in rows):
            return
        if getattr(self, "completion_only_loss", None) is False and not self.args.assistant_only_loss:
            how = (
                "completion_only_loss=False trains prompt-completion data on every token; leave completion_only_loss "
                "unset (or True) so that the prompt can be weighted. Conversational data needs "
                "assistant_only_loss=True; plain language-modelling data (a 'text' column) has no prompt to weight"
            )
        else:
            how = "the labels of the data mark no token as prompt"
        raise ValueError(
            f"prompt_loss_weight={self.args.prompt_loss_weight} has nothing to weight: in the first {len(rows)} rows "
            f"of the prepared training set every token is already trained at weight 1 (no label is -100). {how}"
        )

    def _prepare_dataset(
        self, dataset: Any, processing_class: Any, args: Any, packing: bool, formatting_func: Any, dataset_name: str
    ) -> Any:
        """TRL's preparation, with its truncation done here: after truncating to ``max_length`` TRL drops
        every row without a trained label, such as a prompt that fills ``max_length`` with
        ``truncation_mode="keep_start"``, but at a prompt loss weight above 0 (at any point of a
        schedule) that row's prompt tokens still carry weight, so it is kept (as TRL's
        ``completion_only_loss=False`` keeps it). Packing chunks rows without dropping any: left to TRL."""
        if args.max_length is None or packing:
            return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        untruncated = copy.copy(args)
        untruncated.max_length, untruncated.shuffle_dataset = None, False
        dataset = super()._prepare_dataset(dataset, processing_class, untruncated, packing, formatting_func, dataset_name)
        dataset = _truncate_keeping_weighted_rows(dataset, args, dataset_name)
        if args.shuffle_dataset:  # after truncation and filtering, as TRL shuffles
            dataset = dataset.shuffle(seed=args.seed)
        return dataset

    def plw_model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        # TRL 1.9's `prediction_step` adds this key for its own `compute_loss`.
        return {k: v for k, v in super().plw_model_inputs(batch).items() if k != "_prediction_loss_only"}

    def plw_record_metrics(self, output: PLWForwardOutput, inputs: dict[str, Any], mode: str) -> None:
        """TRL's own metrics, computed as ``SFTTrainer.compute_loss`` computes them."""
        gather = self.accelerator.gather_for_metrics
        num_valid = gather(output.completion_tokens.detach().reshape(1)).sum()
        entropy_sum = gather(output.entropy_sum.reshape(1)).sum()
        correct = gather(output.correct_tokens.reshape(1)).sum()
        valid = num_valid.item() > 0
        self._metrics[mode]["entropy"].append((entropy_sum / num_valid).item() if valid else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((correct / num_valid).item() if valid else 0.0)
        if mode == "train":
            if "attention_mask" in inputs:
                tokens = gather(inputs["attention_mask"].sum().reshape(1)).sum().item()
            else:
                tokens = gather(inputs["input_ids"].new_tensor([inputs["input_ids"].numel()])).sum().item()
            self._total_train_tokens += tokens // getattr(self, "_tp_size", 1)
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]


def _truncate_keeping_weighted_rows(dataset: Any, args: Any, dataset_name: str) -> Any:
    """Truncate prepared rows to ``args.max_length`` as TRL does, then drop the rows without a token of
    weight above 0 (at PLW 0 exactly the rows TRL drops); raise where that leaves none."""
    if args.truncation_mode == "keep_start":
        kept = slice(None, args.max_length)
    elif args.truncation_mode == "keep_end":
        kept = slice(-args.max_length, None)
    else:
        raise ValueError(f"truncation_mode={args.truncation_mode!r} is not supported: use 'keep_start' or 'keep_end'")
    largest_weight = args.prompt_loss_weight_config().largest_weight()

    def holds_weight(example: dict[str, Any]) -> bool:
        labels = example["labels"]
        return any(label != IGNORE_INDEX for label in labels) or row_has_weighted_prompt(labels, largest_weight)

    map_kwargs: dict[str, Any] = {}
    if isinstance(dataset, Dataset):  # an IterableDataset takes neither
        map_kwargs = {"num_proc": args.dataset_num_proc, "desc": f"Truncating {dataset_name} dataset"}
    rows_before = len(dataset) if isinstance(dataset, Dataset) else None
    dataset = dataset.map(
        lambda example: {"input_ids": example["input_ids"][kept], "labels": example["labels"][kept]}, **map_kwargs
    )
    if isinstance(dataset, Dataset):
        map_kwargs["desc"] = f"Dropping {dataset_name} rows without a weighted token"
    dataset = dataset.filter(holds_weight, **map_kwargs)
    if rows_before and len(dataset) == 0:
        why = "and the prompt loss weight is 0 throughout training" if largest_weight == 0 else "leaving one-token rows"
        raise ValueError(
            f"no row of the {dataset_name} dataset holds a token of weight above 0 after truncation to "
            f"max_length={args.max_length} (truncation_mode={args.truncation_mode!r}): truncation cut away every "
            f"completion, {why}, so all {rows_before} rows were dropped. Raise max_length, use "
            "truncation_mode='keep_end', or set prompt_loss_weight above 0"
        )
    return dataset


def _check_arguments(args: Any, compute_loss_func: Any) -> None:
    if not hasattr(args, "prompt_loss_weight"):
        raise ValueError(
            f"args is a {type(args).__name__}; PLWSFTTrainer needs a PLWSFTConfig, which carries prompt_loss_weight"
        )
    if getattr(args, "loss_type", "nll") == "dft":
        raise ValueError("loss_type='dft' is not supported with the prompt loss weight; use loss_type='nll'")
    if args.label_smoothing_factor > 0:
        raise ValueError(
            f"label_smoothing_factor={args.label_smoothing_factor} is not supported with the prompt loss weight; set it to 0"
        )
    if compute_loss_func is not None:
        raise ValueError("compute_loss_func replaces the loss, which PLWSFTTrainer computes; do not pass one")
