"""Training step time and peak memory of ``axolotl train`` with the prompt loss weight plugin against
stock Axolotl on the same config, side by side.

Each variant is a real ``axolotl train`` run in its own process on the same local model (Llama,
hidden 256, 4 layers, the built-in byte-level tokenizer with a 2048 vocabulary) and real data
(GPTeacher Toolformer from ../shared/data, short completions after long prompts), packed to
``sequence_len`` with gradient accumulation. The runs list ``StepTimerPlugin`` (below) beside the
plugin under test; it times the optimiser steps after the warm-up (median) and measures peak memory over
training: on GPU ``torch.cuda.max_memory_allocated``, on CPU the growth of the peak resident set
size over the resident size when training starts, model loaded (Linux ``/proc/self/clear_refs``),
which leaves out the gigabyte of imported libraries that every Axolotl process holds. Stock ``train_on_inputs:
false`` is the baseline; stock ``train_on_inputs: true`` is the fair comparison at PLW > 0, which
trains the prompt tokens too.

    .venv-axolotl/bin/python benchmarks/axolotl_step.py [--steps 6] [--no-record]

``--chat`` measures the cost of the role weights instead: the same rows as two-turn ``type:
chat_template`` conversations behind a long system prompt, trained by the plugin at
``prompt_loss_weight`` 0.1 alone and with the role keys set (system 0, template 0, history 0.5,
token-count normalisation). Both runs carry the per-token roles; the ratio is what setting the keys
costs. The variants alternate ``--repeats`` times and the ratio compares their fastest steps, so
that another process on a shared machine does not decide it.

    .venv-axolotl/bin/python benchmarks/axolotl_step.py --chat [--steps 8] [--repeats 2] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

BENCHMARKS = Path(__file__).resolve().parent
DATA = BENCHMARKS.parents[1] / "shared" / "data" / "gpteacher_toolformer_alpaca.json"
RESULT_ENV = "PLW_BENCH_RESULT"
PLUGIN = "plw_plugins.integrations.axolotl.PromptLossWeightPlugin"
VARIANTS = {
    "stock, train_on_inputs: false": {"train_on_inputs": False},
    "stock, train_on_inputs: true": {"train_on_inputs": True},
    "PLW 0": {"plugins": [PLUGIN], "prompt_loss_weight": 0.0},
    "PLW 0.1": {"plugins": [PLUGIN], "prompt_loss_weight": 0.1},
}
CHAT_VARIANTS = {
    "PLW 0.1 only": {"plugins": [PLUGIN], "prompt_loss_weight": 0.1},
    "PLW 0.1 + role weights": {
        "plugins": [PLUGIN], "prompt_loss_weight": 0.1, "system_loss_weight": 0.0, "template_loss_weight": 0.0,
        "history_loss_weight": 0.5, "loss_normalization": "token_count",
    },
}
SYSTEM_PROMPT = " ".join(
    ["You are a meticulous assistant with access to tools such as a calculator, a calendar and a web search.",
     "Think about which tool a request needs, call it with exact arguments, and answer in one short sentence."] * 4
)
"""A long system prompt, repeated in every conversation (about 150 words)."""
WARMUP_STEPS = 2
MICRO_BATCH = 2
ACCUMULATION = 2
SEQUENCE_LEN = 1024


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class StepTimer(TrainerCallback):
    """Times each optimiser step after the warm-up and measures peak memory over training; writes
    JSON at the end."""

    def __init__(self, result_path: str) -> None:
        self.result_path = result_path
        self.step_seconds: list[float] = []
        self.start = 0.0
        self.base_kib: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident set size
            self.base_kib = _rss_kib("VmRSS")
        except OSError:
            self.base_kib = None

    def on_step_begin(self, args, state, control, **kwargs):
        _synchronize()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _synchronize()
        if state.global_step > WARMUP_STEPS:
            self.step_seconds.append(time.perf_counter() - self.start)

    def on_train_end(self, args, state, control, **kwargs):
        import torch

        if torch.cuda.is_available():
            peak_mib = torch.cuda.max_memory_allocated() / 2**20
        elif self.base_kib is not None:
            peak_mib = (_rss_kib("VmHWM") - self.base_kib) / 1024
        else:
            peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result = {"seconds_per_step": statistics.median(self.step_seconds), "fastest_step": min(self.step_seconds),
                  "peak_mib": peak_mib}
        Path(self.result_path).write_text(json.dumps(result))


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimerPlugin(BasePlugin):
    """Adds ``StepTimer`` to the trainer of a benchmark run."""

    def add_callbacks_post_trainer(self, cfg, trainer):
        return [StepTimer(os.environ[RESULT_ENV])]


def chat_rows(rows: list[dict]) -> list[dict]:
    """Alpaca rows as two-turn conversations (two rows each) behind ``SYSTEM_PROMPT``."""
    def user(row: dict) -> str:
        return row["instruction"] + ("\n\n" + row["input"] if row.get("input") else "")

    return [
        {"messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user(first)}, {"role": "assistant", "content": first["output"]},
            {"role": "user", "content": user(second)}, {"role": "assistant", "content": second["output"]},
        ]}
        for first, second in zip(rows[::2], rows[1::2])
    ]


def write_config(work: Path, name: str, model_dir: Path, data: Path, steps: int, *, chat: bool = False) -> Path:
    run_dir = work / name.replace(" ", "_").replace(",", "").replace(":", "").replace("+", "and")
    run_dir.mkdir()
    dataset = {"path": str(data), "type": "alpaca", "ds_type": "json"}
    if chat:
        dataset = {"path": str(data), "type": "chat_template", "ds_type": "json", "field_messages": "messages"}
    config = {
        "base_model": str(model_dir),
        "tokenizer_type": "AutoTokenizer",
        "datasets": [dataset],
        "dataset_prepared_path": str(run_dir / "prepared"),
        "output_dir": str(run_dir / "out"),
        "val_set_size": 0,
        "sequence_len": SEQUENCE_LEN,
        "sample_packing": True,
        "micro_batch_size": MICRO_BATCH,
        "gradient_accumulation_steps": ACCUMULATION,
        "max_steps": steps,
        "num_epochs": 1,
        "learning_rate": 1e-4,
        "optimizer": "adamw_torch",
        "lr_scheduler": "constant",
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "attn_implementation": "sdpa",
        "logging_steps": steps,
        "save_strategy": "no",
        "seed": 0,
        "dataloader_num_workers": 0,
        "dataset_num_proc": 1,
        **({"chat_template": "tokenizer_default"} if chat else {}),
        **(CHAT_VARIANTS if chat else VARIANTS)[name],
    }
    config["plugins"] = [*config.get("plugins", []), "axolotl_step.StepTimerPlugin"]
    path = run_dir / "config.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


def run_variant(config: Path) -> dict:
    result = config.with_name("result.json")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
        "WANDB_MODE": "disabled",
        RESULT_ENV: str(result),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCHMARKS), os.environ.get("PYTHONPATH")])),
    }
    axolotl = Path(sys.executable).with_name("axolotl")
    process = subprocess.run(
        [str(axolotl), "train", str(config), "--launcher", "python"], env=env, capture_output=True, text=True
    )
    if process.returncode != 0 or not result.exists():
        raise RuntimeError(f"axolotl train {config} failed:\n{(process.stdout + process.stderr)[-4000:]}")
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--no-record", action="store_true", help="print only, do not write RESULTS.md")
    parser.add_argument("--chat", action="store_true", help="role weights against the prompt loss weight alone, on chat data")
    parser.add_argument("--repeats", type=int, default=2, help="with --chat: alternate the two variants this often")
    args = parser.parse_args()
    if args.chat:
        chat_main(args)
        return

    sys.path.insert(0, str(BENCHMARKS))
    from record import machine, markdown_table, record

    from plw_plugins.cli.tiny_model import build_tiny_llama

    rows_needed = 4 * MICRO_BATCH * ACCUMULATION * args.steps  # about three samples fit in a packed row
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = work / "model"
        build_tiny_llama(model_dir, hidden_size=256, layers=4, vocab_size=2048)
        data = work / "toolformer.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in json.loads(DATA.read_text())[:rows_needed]))
        results = {}
        for name in VARIANTS:
            results[name] = run_variant(write_config(work, name, model_dir, data, args.steps))
            print(name, results[name], flush=True)

    import torch

    memory = "peak GPU memory allocated" if torch.cuda.is_available() else "peak RSS growth"
    rows = []
    for name, result in results.items():
        row = [name, f"{result['seconds_per_step']:.3f}", f"{result['peak_mib']:.0f}"]
        for baseline in ("stock, train_on_inputs: false", "stock, train_on_inputs: true"):
            base = results[baseline]
            row += [
                f"{result['seconds_per_step'] / base['seconds_per_step']:.2f}x",
                f"{result['peak_mib'] / base['peak_mib']:.2f}x" if base["peak_mib"] > 0 else "n/a",
            ]
        rows.append(row)
    header = [
        "run", "s/step (median)", f"{memory} (MiB)", "step time vs stock masked", "memory vs stock masked",
        "step time vs stock all", "memory vs stock all",
    ]
    body = (
        f"{machine()}. `axolotl train` (Axolotl 0.19), Llama hidden 256, 4 layers, vocab 2048; GPTeacher "
        f"Toolformer, sample_packing to sequence_len {SEQUENCE_LEN}, micro_batch_size {MICRO_BATCH}, "
        f"gradient_accumulation_steps {ACCUMULATION}, fp32, sdpa; median of {args.steps - WARMUP_STEPS} steps after "
        f"{WARMUP_STEPS} warm-up steps, each run in a fresh process. masked = stock `train_on_inputs: false`; "
        "all = stock `train_on_inputs: true` (the fair baseline at PLW > 0).\n\n" + markdown_table(header, rows)
    )
    if args.no_record:
        print(body)
    else:
        record("axolotl_step", "Axolotl: step time and memory with the plugin against stock Axolotl", body)


def chat_main(args: argparse.Namespace) -> None:
    """Step time of the role weights against the prompt loss weight alone, on conversations."""
    sys.path.insert(0, str(BENCHMARKS))
    from record import record

    from plw_plugins.cli.tiny_model import build_tiny_llama

    rows_needed = 2 * 2 * MICRO_BATCH * ACCUMULATION * args.steps  # two rows a conversation, about two a packed row
    results: dict[str, list[dict]] = {name: [] for name in CHAT_VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = work / "model"
        build_tiny_llama(model_dir, hidden_size=256, layers=4, vocab_size=2048)
        data = work / "toolformer_chat.jsonl"
        rows = chat_rows(json.loads(DATA.read_text())[:rows_needed])
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        for repeat in range(args.repeats):
            for name in CHAT_VARIANTS:
                (work / str(repeat)).mkdir(exist_ok=True)
                config = write_config(work / str(repeat), name, model_dir, data, args.steps, chat=True)
                results[name].append(run_variant(config))
                print(repeat, name, results[name][-1], flush=True)

    body = chat_results(results, conversations=len(rows), steps=args.steps, repeats=args.repeats)
    if args.no_record:
        print(body)
    else:
        record("axolotl_chat_step", "Axolotl: step time of the role weights on conversations", body)


def chat_results(results: dict[str, list[dict]], *, conversations: int, steps: int, repeats: int) -> str:
    """The table of ``--chat``: per variant the fastest single step and the fastest median over the
    repeats, and the ratio of the fastest steps (on a shared machine the slower steps measure other
    processes' load, which no median over a few steps removes)."""
    sys.path.insert(0, str(BENCHMARKS))
    from record import machine, markdown_table

    def fastest(name: str, key: str) -> float:
        return min(run[key] for run in results[name])

    base = fastest("PLW 0.1 only", "fastest_step")
    table = markdown_table(
        ["run", "fastest step (s)", "fastest median s/step", "medians of the repeats", "step time vs PLW 0.1 only"],
        [[name, f"{fastest(name, 'fastest_step'):.3f}", f"{fastest(name, 'seconds_per_step'):.3f}",
          ", ".join(f"{run['seconds_per_step']:.3f}" for run in runs), f"{fastest(name, 'fastest_step') / base:.3f}x"]
         for name, runs in results.items()],
    )
    return (
        f"{machine()}. `axolotl train` (Axolotl 0.19), Llama hidden 256, 4 layers, vocab 2048; GPTeacher Toolformer "
        f"as {conversations} two-turn `type: chat_template` conversations behind a {len(SYSTEM_PROMPT.split())}-word "
        f"system prompt, sample_packing to sequence_len {SEQUENCE_LEN}, micro_batch_size {MICRO_BATCH}, "
        f"gradient_accumulation_steps {ACCUMULATION}, fp32, sdpa; {steps - WARMUP_STEPS} steps after {WARMUP_STEPS} "
        f"warm-up steps, each run in a fresh process, the two variants alternated {repeats} times. The ratio compares "
        "the fastest single steps: on a shared machine the other steps measure other processes' load. Role weights: "
        "system 0, template 0, history 0.5, token_count. Command: "
        f"`.venv-axolotl/bin/python benchmarks/axolotl_step.py --chat --steps {steps} --repeats {repeats}`."
        "\n\n" + table
    )


if __name__ == "__main__":
    main()
