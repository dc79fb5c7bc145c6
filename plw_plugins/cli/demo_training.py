"""The demo's training part: one ``PLWSFTTrainer`` run per prompt loss weight, with the measurements
the study's mechanism needs (held-out prompt, completion and general-text losses, and how far the
weights moved from the start). Imported only when the demo runs: it needs TRL."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, TrainerCallback, set_seed
from tqdm.auto import tqdm
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from plw_plugins.integrations.trl import PLWSFTConfig, PLWSFTTrainer

EVAL_SETS = ("held_out", "general")
"""Evaluated during training: held-out instruction rows and held-out general text."""


@dataclass
class Measurements:
    """Losses (mean NLL per token) and weight distance at one point of a run."""

    train_prompt_loss: float
    train_completion_loss: float
    held_out_prompt_loss: float
    held_out_completion_loss: float
    general_text_loss: float
    weight_distance: float


@dataclass
class WeightResult:
    """One fine-tuning run at one prompt loss weight: where it started, where it ended, the curves
    against the step, the held-out completion loss by length class, and the trainer's log."""

    prompt_loss_weight: float
    start: Measurements
    end: Measurements
    held_out_completion_loss_by_class: dict[str, float]
    curves: dict[str, list[tuple[int, float]]] = field(repr=False)
    log_history: list[dict[str, Any]] = field(repr=False)


class WeightDistance(TrainerCallback):
    """The relative L2 distance ``||theta - theta_0|| / ||theta_0||`` of all parameters from the
    start, recorded at every evaluation of the held-out rows."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.start = [p.detach().clone() for p in model.parameters()]
        self.start_norm = math.sqrt(sum(float(p.double().square().sum()) for p in self.start))
        self.points: list[tuple[int, float]] = []

    def distance(self, model: torch.nn.Module) -> float:
        squared = sum(float((p.detach() - s).double().square().sum()) for p, s in zip(model.parameters(), self.start))
        return math.sqrt(squared) / self.start_norm

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):  # noqa: ANN001
        if model is not None and metrics and "eval_held_out_loss" in metrics:
            if not self.points or self.points[-1][0] != state.global_step:
                self.points.append((state.global_step, self.distance(model)))


class TrainingBar(ProgressCallback):
    """The trainer's own progress bar over the training steps, labelled with the weight, and nothing
    else: no evaluation bars, no log dicts (they stay in ``log_history``)."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, desc=self.label, dynamic_ncols=True)
        self.current_step = 0

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):  # noqa: ANN001
        pass

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        pass


def curves_from(log_history: list[dict], distances: list[tuple[int, float]]) -> dict[str, list[tuple[int, float]]]:
    """Every measured quantity against the step."""
    curves: dict[str, list[tuple[int, float]]] = {
        "train_prompt_loss": [], "train_completion_loss": [], "held_out_prompt_loss": [],
        "held_out_completion_loss": [], "general_text_loss": [], "weight_distance": list(distances),
    }
    for entry in log_history:
        step = entry.get("step", 0)
        if "eval_held_out_loss" in entry:
            curves["held_out_prompt_loss"].append((step, entry["eval_held_out_prompt_loss"]))
            curves["held_out_completion_loss"].append((step, entry["eval_held_out_completion_loss"]))
        elif "eval_general_loss" in entry:
            curves["general_text_loss"].append((step, entry["eval_general_completion_loss"]))
        elif "loss" in entry and "prompt_loss" in entry:
            curves["train_prompt_loss"].append((step, entry["prompt_loss"]))
            curves["train_completion_loss"].append((step, entry["completion_loss"]))
    return curves


def train_one(
    weight: float,
    args: argparse.Namespace,
    model_path: str,
    tokenizer: Any,
    train: Any,
    eval_sets: dict[str, Any],
    classes: dict[str, Any],
) -> WeightResult:
    """Fine-tune a fresh copy of the model at ``weight``; the seed fixes the data order. ``eval_sets``
    holds ``held_out``, ``general`` and ``train_sample`` (training rows, measured at the start)."""
    set_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    config = PLWSFTConfig(
        output_dir=str(Path(args.output_dir) / f"plw-{weight:g}"),
        prompt_loss_weight=weight,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=max(args.batch_size, 32),
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.max_steps // 20),
        logging_steps=max(1, args.max_steps // 20),
        eval_strategy="steps",
        eval_steps=max(1, args.max_steps // 8),
        save_strategy="no",
        report_to=[],
        disable_tqdm=False,
        seed=args.seed,
        data_seed=args.seed,
        max_length=args.max_length,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=bool(args.model),  # TRL's default; only a waste on the tiny model
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = PLWSFTTrainer(
        model=model,
        args=config,
        train_dataset=train,
        eval_dataset={name: eval_sets[name] for name in EVAL_SETS},
        processing_class=tokenizer,
    )
    distance = WeightDistance(trainer.model)
    trainer.add_callback(distance)
    if not args.verbose:
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(TrainingBar(f"PLW {weight:g}"))
    else:
        print(f"\n== prompt_loss_weight = {weight:g} ==")

    trainer.evaluate()  # held-out rows and general text at step 0, the same for every weight
    start_log = list(trainer.state.log_history)  # train() starts a new log history
    train_start = trainer.evaluate(eval_dataset=eval_sets["train_sample"], metric_key_prefix="eval_train_sample")
    trainer.train()
    if distance.points[-1][0] != trainer.state.global_step:
        trainer.evaluate()
    by_class = {}
    for name, dataset in classes.items():
        by_class[name] = trainer.evaluate(eval_dataset=dataset, metric_key_prefix=f"eval_{name}")[f"eval_{name}_completion_loss"]

    log_history = [*start_log, *trainer.state.log_history]
    curves = curves_from(log_history, distance.points)
    start = Measurements(
        train_prompt_loss=train_start["eval_train_sample_prompt_loss"],
        train_completion_loss=train_start["eval_train_sample_completion_loss"],
        held_out_prompt_loss=curves["held_out_prompt_loss"][0][1],
        held_out_completion_loss=curves["held_out_completion_loss"][0][1],
        general_text_loss=curves["general_text_loss"][0][1],
        weight_distance=0.0,
    )
    end = Measurements(
        train_prompt_loss=curves["train_prompt_loss"][-1][1],
        train_completion_loss=curves["train_completion_loss"][-1][1],
        held_out_prompt_loss=curves["held_out_prompt_loss"][-1][1],
        held_out_completion_loss=curves["held_out_completion_loss"][-1][1],
        general_text_loss=curves["general_text_loss"][-1][1],
        weight_distance=distance.points[-1][1],
    )
    return WeightResult(weight, start, end, by_class, curves, log_history)
