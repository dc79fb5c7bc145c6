"""Lightning training-step time and peak memory: the PromptLossWeight callback against the same module
with transformers' own masked cross-entropy, side by side.

Three variants of one LightningModule around a random Llama (real Trainer, AdamW, fp32):

- ``masked CE``: ``model(..., labels=labels).loss``, transformers' completion-only loss, no callback;
- ``PLW``: ``self.prompt_weighted_loss(model(...), batch)`` with ``PromptLossWeight(0.1)``;
- ``PLW lean``: ``self.prompt_weighted_loss(model.model(...), batch, lm_head=model.lm_head)``.

Each variant runs in its own process (peak memory is per process on CPU) and the variants alternate
over rounds, so that a noisy machine slows them alike. Step time is the median of the timed steps
(``on_train_batch_start`` to ``on_train_batch_end``, after warm-up). Peak memory is
``torch.cuda.max_memory_allocated`` on a GPU, else the growth of the process's peak RSS over its RSS
when training starts (activations, logits, gradients and optimiser state).

    python benchmarks/lightning_step.py             # records section `lightning_step` of RESULTS.md
    python benchmarks/lightning_step.py --quick     # a smaller run that records nothing
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"masked CE": "plain", "PLW": "output", "PLW lean": "lean"}
PROMPT_LOSS_WEIGHT = 0.1


def _rss_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(mode: str, args: argparse.Namespace) -> dict:
    """Train one variant in this process; its median step time (s) and peak memory (MiB)."""
    import lightning.pytorch as L
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from plw_plugins.integrations.lightning import PromptLossWeight, PromptLossWeightMixin

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 3, num_hidden_layers=args.layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=args.tokens,
    )
    cuda = torch.cuda.is_available()

    def batch() -> dict[str, torch.Tensor]:
        # Rows of different lengths (right padding); the first 70% of each row is prompt.
        lengths = [args.tokens - (row % 4) * args.tokens // 8 for row in range(args.rows)]
        input_ids = torch.randint(3, args.vocab, (args.rows, args.tokens))
        position = torch.arange(args.tokens)
        attention_mask = torch.stack([(position < n).long() for n in lengths])
        is_prompt = torch.stack([position < int(0.7 * n) for n in lengths])
        labels = torch.where(is_prompt | (attention_mask == 0), -100, input_ids)
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}

    class Module(PromptLossWeightMixin, L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = LlamaForCausalLM(config)

        def training_step(self, batch, batch_idx):
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            if mode == "plain":
                return self.model(**inputs, labels=batch["labels"]).loss
            if mode == "lean":
                return self.prompt_weighted_loss(self.model.model(**inputs), batch, lm_head=self.model.lm_head)
            return self.prompt_weighted_loss(self.model(**inputs), batch)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-4)

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.baseline = 0

        def on_train_start(self, trainer, pl_module):
            self.baseline = _rss_bytes()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
                if batch_idx == args.warmup:
                    torch.cuda.reset_peak_memory_stats()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
            if batch_idx >= args.warmup:
                self.times.append(time.perf_counter() - self.start)

    timer = StepTimer()
    callbacks = [timer] if mode == "plain" else [PromptLossWeight(prompt_loss_weight=PROMPT_LOSS_WEIGHT), timer]
    batches = [batch() for _ in range(args.warmup + args.steps)]
    trainer = L.Trainer(
        max_steps=args.warmup + args.steps, callbacks=callbacks, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="gpu" if cuda else "cpu", devices=1,
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    trainer.fit(Module(), train_dataloaders=loader)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - timer.baseline
    memory = "peak CUDA allocation" if cuda else "growth of peak RSS over the RSS at the start of training"
    return {"times": timer.times, "peak_mib": peak / 2**20, "memory": memory}


def run_variant(mode: str, argv: list[str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, __file__, "--worker", mode, *argv]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"variant {mode} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a small run to check the script; records nothing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    if args.quick:
        args.tokens, args.vocab, args.steps, args.rounds = 128, 4096, 2, 1
    argv = [f"--{key}={getattr(args, key)}" for key in ("rows", "tokens", "hidden", "layers", "vocab", "warmup", "steps")]

    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    peaks: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, mode in VARIANTS.items():
            result = run_variant(mode, argv)
            times[name] += result["times"]
            peaks[name].append(result["peak_mib"])
            memory = result["memory"]

    sys.path.insert(0, str(Path(__file__).parent))
    from record import machine, markdown_table, record

    step = {name: statistics.median(values) for name, values in times.items()}
    peak = {name: max(values) for name, values in peaks.items()}
    rows = [
        [name, f"{step[name] * 1000:.0f}", f"{step[name] / step['masked CE']:.3f}x", f"{peak[name]:.0f}",
         f"{peak[name] / peak['masked CE']:.2f}x"]
        for name in VARIANTS
    ]
    table = markdown_table(["loss", "step time (ms)", "time vs masked CE", "peak memory (MiB)", "memory vs masked CE"], rows)
    body = (
        f"{machine()}. Real `lightning.pytorch.Trainer`, random Llama (hidden {args.hidden}, {args.layers} layers, "
        f"vocabulary {args.vocab}), fp32, AdamW, batch {args.rows} x {args.tokens} tokens (right-padded, 70% prompt), "
        f"prompt loss weight {PROMPT_LOSS_WEIGHT}; median of {args.steps} steps x {args.rounds} rounds after "
        f"{args.warmup} warm-up steps, variants alternating in separate processes. Memory: {memory}.\n\n"
        f"{table}\n\nTarget: PLW at most 1.05x the step time of masked CE."
    )
    if args.quick:
        print(body)
    else:
        record("lightning_step", "Lightning: PromptLossWeight callback vs masked cross-entropy", body)


if __name__ == "__main__":
    main()
