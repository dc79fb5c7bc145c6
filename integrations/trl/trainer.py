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

from accelerate import PartialState
from datasets import Dataset
from trl import SFTTrainer
from trl.data_utils import get_dataset_column_names, is_conversational, is_conversational_from_value, pack_dataset
from trl.trainer import utils as trl_utils
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from plw_plugins import IGNORE_INDEX
from plw_plugins.integrations.transformers import PLWForwardOutput, PromptLossWeightTrainerMixin
from plw_plugins.masks import row_has_weighted_prompt
from plw_plugins.roles import MESSAGE_WEIGHTS_KEY, PROMPT_CONTENT_KEY, ROLES_KEY

from .config import PLWSFTConfig
from .roles import ROLE_COLUMNS, ROLE_KEYS, RoleColumnsCollator, add_role_columns, slice_row

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
        self._wrap_collator_for_roles()
        self._check_prompt_tokens()

    def _wrap_collator_for_roles(self) -> None:
        """Give TRL's collator the role columns to lay out; a collator of the user's own never sees
        them (they are dropped with the other unused columns), and then no role key may be set."""
        self._plw_role_batches = isinstance(self.data_collator, DataCollatorForLanguageModeling)
        if self._plw_role_batches:
            self.data_collator = RoleColumnsCollator(self.data_collator, padding_free=self.data_collator.padding_free)
            return
        needs = [key for key in ROLE_KEYS if getattr(self.args, key) is not None]
        if isinstance(self.train_dataset, Dataset) and MESSAGE_WEIGHTS_KEY in self.train_dataset.column_names and any(
            weight >= 0 for row in self.train_dataset[MESSAGE_WEIGHTS_KEY] for weight in row
        ):
            needs.append("per-message weights in the data")
        if needs:
            raise ValueError(
                f"{', '.join(needs)} need token roles in every batch, which PLWSFTTrainer adds through TRL's own "
                f"collator; this trainer was given a {type(self.data_collator).__name__}. Leave data_collator unset"
            )

    def _check_prompt_tokens(self) -> None:
        """Raise when the prepared training data has no masked token: then every token is already
        trained at weight 1 and the prompt loss weight would change nothing."""
        dataset = self.train_dataset
        if dataset is None:
            return
        rows = list(islice(iter(dataset), ROWS_CHECKED))
        if not rows or "labels" not in rows[0] or any(-100 in row["labels"] for row in rows):
            return
        if ROLES_KEY in rows[0] and (self.args.history_loss_weight is not None or any(
            weight >= 0 for row in rows for weight in row[MESSAGE_WEIGHTS_KEY]
        )):
            return  # earlier assistant turns or messages of their own weight are weighted, even when all are trained
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
        """TRL's preparation, with its truncation done here, and token roles on conversational data.

        Truncation: after truncating to ``max_length`` TRL drops every row without a trained label,
        such as a prompt that fills ``max_length`` with ``truncation_mode="keep_start"``, but at a
        prompt loss weight above 0 (at any point of a schedule) that row's prompt tokens still carry
        weight, so it is kept (as TRL's ``completion_only_loss=False`` keeps it).

        Roles: on conversational rows (``messages``, or conversational prompt-completion) TRL
        tokenises, the role columns are added (``roles.add_role_columns``), and the rows are truncated
        and packed here exactly as TRL would (its steps, in its order), keeping the role columns. With
        no role key set and no per-message weight, the losses are what they were without roles; the
        roles then give the role metrics (``system_loss``...)."""
        with_roles = self._plw_roles_possible(dataset, formatting_func)
        # Rows tokenised beforehand may bring their own role columns (``tokenize_conversation``).
        roles_given = dataset is not None and ROLES_KEY in (get_dataset_column_names(dataset) or [])
        pack_here = packing and (with_roles or roles_given)
        if not (with_roles or roles_given) and (args.max_length is None or packing):
            return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        tokenized_only = copy.copy(args)
        tokenized_only.max_length, tokenized_only.shuffle_dataset = None, False
        dataset = super()._prepare_dataset(
            dataset, processing_class, tokenized_only, packing and not pack_here, formatting_func, dataset_name
        )
        map_kwargs: dict[str, Any] = {}
        if isinstance(dataset, Dataset):  # an IterableDataset takes neither
            map_kwargs = {"num_proc": args.dataset_num_proc, "desc": f"Adding token roles to {dataset_name} dataset"}
        with PartialState().main_process_first():
            if with_roles:
                strict = any(getattr(args, key) is not None for key in ROLE_KEYS)
                dataset = add_role_columns(
                    dataset, tokenizer=self._tokenizer, chat_template=self.chat_template, strict=strict,
                    map_kwargs=map_kwargs, dataset_name=dataset_name,
                )
            if args.max_length is not None and not packing:
                dataset = _truncate_keeping_weighted_rows(dataset, args, dataset_name)
            if pack_here:
                dataset = _pack_as_trl_does(dataset, args, map_kwargs, dataset_name)
        if args.shuffle_dataset:  # after truncation and filtering, as TRL shuffles
            dataset = dataset.shuffle(seed=args.seed)
        return dataset

    def _plw_roles_possible(self, dataset: Any, formatting_func: Any) -> bool:
        """Whether TRL will tokenise this dataset from conversations, or from text prompts a template
        wrote with the data's text marked (``PROMPT_CONTENT_KEY``), whose token roles can then be found."""
        if dataset is None or formatting_func is not None or getattr(self, "_is_vision_dataset", False):
            return False
        columns = get_dataset_column_names(dataset) or []
        if "input_ids" in columns:
            return False
        first = next(iter(dataset))
        templated_text = PROMPT_CONTENT_KEY in columns and isinstance(first.get("prompt"), str)
        return templated_text or is_conversational(first) or is_conversational_from_value(first)

    def _set_signature_columns_if_needed(self) -> None:
        """TRL's columns, plus the role columns: the trainer drops every other column before collation."""
        super()._set_signature_columns_if_needed()
        if getattr(self, "_plw_role_batches", False):
            extra = [column for column in ROLE_COLUMNS if column not in self._signature_columns]
            self._signature_columns = [*self._signature_columns, *extra]

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
        return (
            any(label != IGNORE_INDEX for label in labels)
            or row_has_weighted_prompt(labels, largest_weight)
            or any(weight > 0 for weight in example.get(MESSAGE_WEIGHTS_KEY, [])[1:])
        )

    map_kwargs: dict[str, Any] = {}
    if isinstance(dataset, Dataset):  # an IterableDataset takes neither
        map_kwargs = {"num_proc": args.dataset_num_proc, "desc": f"Truncating {dataset_name} dataset"}
    rows_before = len(dataset) if isinstance(dataset, Dataset) else None
    dataset = dataset.map(slice_row, fn_kwargs={"kept": kept}, **map_kwargs)
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


def _pack_as_trl_does(dataset: Any, args: Any, map_kwargs: dict[str, Any], dataset_name: str) -> Any:
    """TRL's packing step (1.9 to 1.16), keeping the role columns: ``input_ids``, ``labels`` and the
    role columns, shuffled first when ``shuffle_dataset`` (wrapped packing must not pack neighbours),
    packed by ``trl.data_utils.pack_dataset``, which adds ``seq_lengths``."""
    if args.max_length is None:
        raise ValueError("When packing is enabled, `max_length` can't be `None`.")
    if isinstance(dataset, Dataset):
        map_kwargs = {**map_kwargs, "desc": f"Packing {dataset_name} dataset"}
    columns = get_dataset_column_names(dataset)
    dataset = dataset.select_columns([c for c in ("input_ids", "labels", *ROLE_COLUMNS) if c in columns])
    if args.shuffle_dataset:
        dataset = dataset.shuffle(seed=args.seed)
    dataset = pack_dataset(dataset, args.max_length, args.packing_strategy, map_kwargs)
    if getattr(args, "use_liger_kernel", False):  # TRL 1.9 keeps only what its collator reads
        columns = get_dataset_column_names(dataset)
        dataset = dataset.select_columns([c for c in ("input_ids", "seq_lengths", "labels", *ROLE_COLUMNS) if c in columns])
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
