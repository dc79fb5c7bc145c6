"""Training step time and peak memory of PLWSFTTrainer against stock SFTTrainer, side by side.

Each variant trains in a fresh process (so that peak memory is its own: on CPU, the peak resident
set size from ``resource.getrusage``; on GPU, ``torch.cuda.max_memory_allocated``) on the same
local model (Llama, hidden 256, 4 layers, the built-in byte-level tokenizer with a 2048 vocabulary)
and real data (GPTeacher Toolformer from ../shared/data, Alpaca rows as prompt-completion rows).
Stock completion-only is the baseline; stock train-on-everything is the fair comparison at
PLW > 0, which trains the prompt tokens too.

    .venv/bin/python benchmarks/trl_step.py [--steps 8] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpteacher_toolformer_alpaca.json"
VARIANTS = {
    "stock, completion only": {"plw": None, "completion_only_loss": True},
    "stock, every token": {"plw": None, "completion_only_loss": False},
    "PLW 0": {"plw": 0.0},
    "PLW 0.1": {"plw": 0.1},
}
WARMUP_STEPS = 2
BATCH = 4
MAX_LENGTH = 512


def run_variant(name: str, model_dir: str, steps: int) -> dict:
    """Train ``steps`` optimiser steps in this process; time those after the warm-up."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from plw_plugins.integrations.trl import PLWSFTConfig, PLWSFTTrainer
    from plw_plugins.cli.datasets import alpaca_to_prompt_completion

    spec = VARIANTS[name]
    rows = [alpaca_to_prompt_completion(row) for row in json.loads(DATA.read_text())[: BATCH * steps]]
    common = dict(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=1e-4,
        max_length=MAX_LENGTH, report_to=[], save_strategy="no", logging_steps=steps, disable_tqdm=True,
        bf16=False, use_cpu=not torch.cuda.is_available(), seed=0,
    )
    if spec["plw"] is None:
        trainer_cls, args = SFTTrainer, SFTConfig(completion_only_loss=spec["completion_only_loss"], **common)
    else:
        trainer_cls, args = PLWSFTTrainer, PLWSFTConfig(prompt_loss_weight=spec["plw"], **common)

    class StepTimer(TrainerCallback):
        start = None

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == WARMUP_STEPS:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                StepTimer.start = time.perf_counter()

    trainer = trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        args=args, train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(model_dir),
        callbacks=[StepTimer()],
    )
    trainer.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - StepTimer.start
    if torch.cuda.is_available():
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"steps_per_s": (steps - WARMUP_STEPS) / seconds, "peak_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--no-record", action="store_true", help="print only, do not write RESULTS.md")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.model_dir, args.steps)))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from record import machine, markdown_table, record

    from plw_plugins.cli.tiny_model import build_tiny_llama

    with tempfile.TemporaryDirectory() as model_dir:
        build_tiny_llama(model_dir, hidden_size=256, layers=4, vocab_size=2048)
        results = {}
        for name in VARIANTS:
            command = [sys.executable, __file__, "--variant", name, "--model-dir", model_dir, "--steps", str(args.steps)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[name] = json.loads(out.strip().splitlines()[-1])
            print(name, results[name], flush=True)

    import torch

    memory = "peak GPU memory allocated" if torch.cuda.is_available() else "peak resident set size"
    rows = []
    for name, result in results.items():
        row = [name, f"{result['steps_per_s']:.2f}", f"{result['peak_mib']:.0f}"]
        for baseline in ("stock, completion only", "stock, every token"):
            base = results[baseline]
            row += [f"{base['steps_per_s'] / result['steps_per_s']:.2f}x", f"{result['peak_mib'] / base['peak_mib']:.2f}x"]
        rows.append(row)
    header = [
        "trainer", "steps/s", f"{memory} (MiB)", "step time vs stock c.o.", "memory vs stock c.o.",
        "step time vs stock all", "memory vs stock all",
    ]
    body = (
        f"{machine()}. Llama hidden 256, 4 layers, vocab 2048; GPTeacher Toolformer, batch {BATCH}, "
        f"max_length {MAX_LENGTH}, fp32; {args.steps - WARMUP_STEPS} timed steps after {WARMUP_STEPS} warm-up steps, "
        "each variant in a fresh process. c.o. = completion_only_loss=True; all = completion_only_loss=False "
        "(the fair baseline at PLW > 0).\n\n" + markdown_table(header, rows)
    )
    if args.no_record:
        print(body)
    else:
        record("trl_step", "TRL: PLWSFTTrainer step time and memory against stock SFTTrainer", body)


if __name__ == "__main__":
    main()
