"""Forward + backward of the LM head plus the loss: the core's two paths against transformers'.

Each variant runs in a fresh process (peak memory is then its own): transformers' ``ForCausalLMLoss``
on materialised logits (the baseline), ``prompt_weighted_loss`` on the same logits,
``prompt_weighted_loss_from_hidden``, and torch's own chunked ``linear_cross_entropy`` with per-token
weights for reference. Peak memory is the growth of the process's peak RSS (CPU) or of torch's peak
allocation (CUDA) over what the inputs already hold.

    python benchmarks/loss.py            # the full grid, recorded in RESULTS.md
    python benchmarks/loss.py --quick    # a small grid to check the script
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

VARIANTS = ("transformers", "logits", "hidden", "torch_lce")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _inputs(tokens: int, hidden: int, vocab: int, prompt_fraction: float, device: str):
    generator = torch.Generator().manual_seed(0)
    hidden_states = (torch.randn(1, tokens, hidden, generator=generator) * 0.5).to(device).requires_grad_()
    weight = (torch.randn(vocab, hidden, generator=generator) * hidden**-0.5).to(device).requires_grad_()
    input_ids = torch.randint(0, vocab, (1, tokens), generator=generator).to(device)
    labels = input_ids.clone()
    labels[:, : int(tokens * prompt_fraction)] = -100
    return hidden_states, weight, input_ids, labels


def _step(variant: str, hidden_states, weight, input_ids, labels, prompt_loss_weight: float) -> None:
    from plw_plugins import build_loss_masks, prompt_weighted_loss, prompt_weighted_loss_from_hidden

    if variant == "transformers":
        from transformers.loss.loss_utils import ForCausalLMLoss

        loss = ForCausalLMLoss(hidden_states @ weight.T, labels, weight.shape[0])
    elif variant == "logits":
        masks = build_loss_masks(input_ids, labels)
        loss = prompt_weighted_loss(hidden_states @ weight.T, masks, prompt_loss_weight).loss
    elif variant == "hidden":
        masks = build_loss_masks(input_ids, labels)
        loss = prompt_weighted_loss_from_hidden(hidden_states, weight, masks, prompt_loss_weight).loss
    else:
        masks = build_loss_masks(input_ids, labels)
        weights = masks.weights(prompt_loss_weight).reshape(-1)
        nll = torch.nn.functional.linear_cross_entropy(
            hidden_states[:, :-1].reshape(-1, weight.shape[1]), weight, masks.targets.reshape(-1),
            reduction="none", options=torch.nn.LinearCrossEntropyOptions(),
        )
        loss = (weights * nll).sum() / weights.sum()
    loss.backward()


def measure(args: argparse.Namespace) -> dict:
    """Time and peak memory of one variant, in this process."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    small = _inputs(256, args.hidden, args.vocab, args.prompt_fraction, device)
    _step(args.variant, *small, args.prompt_loss_weight)  # warm-up: kernels, allocator, lazy imports
    del small
    inputs = _inputs(args.tokens, args.hidden, args.vocab, args.prompt_fraction, device)
    times = []
    for _ in range(args.repeats):
        for tensor in inputs[:2]:
            tensor.grad = None
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = _rss_bytes()
        start = time.perf_counter()
        _step(args.variant, *inputs, args.prompt_loss_weight)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"seconds": min(times), "peak_bytes": max(peak, 0)}


def run_variant(variant: str, vocab: int, prompt_fraction: float, prompt_loss_weight: float, args) -> dict:
    command = [
        sys.executable, __file__, "--measure", variant, "--vocab", str(vocab), "--prompt-fraction",
        str(prompt_fraction), "--prompt-loss-weight", str(prompt_loss_weight), "--tokens", str(args.tokens),
        "--hidden", str(args.hidden), "--repeats", str(args.repeats),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small grid, not recorded")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--measure", choices=VARIANTS, dest="variant", help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prompt-fraction", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--prompt-loss-weight", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args)))
        return

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from record import machine, markdown_table, record

    vocabs = (32_000, 128_256)
    if args.quick:
        args.tokens, args.hidden, args.repeats, vocabs = 512, 128, 1, (4_000,)
    rows = []
    for vocab in vocabs:
        for fraction in (0.5, 0.9):
            base = run_variant("transformers", vocab, fraction, 0.0, args)
            for plw in (0.1, 0.0):
                for variant in ("logits", "hidden", "torch_lce"):
                    result = run_variant(variant, vocab, fraction, plw, args)
                    rows.append([
                        f"{vocab:,}", fraction, plw, variant, f"{result['seconds']:.3f}",
                        f"{result['seconds'] / base['seconds']:.2f}x", f"{result['peak_bytes'] / 2**20:,.0f}",
                        f"{result['peak_bytes'] / max(base['peak_bytes'], 1):.2f}x",
                    ])
                    print(rows[-1], f"(baseline {base['seconds']:.3f} s, {base['peak_bytes'] / 2**20:,.0f} MiB)",
                          flush=True)
            rows.append([f"{vocab:,}", fraction, "-", "transformers (baseline)", f"{base['seconds']:.3f}", "1.00x",
                         f"{base['peak_bytes'] / 2**20:,.0f}", "1.00x"])
    table = markdown_table(
        ["vocab", "prompt fraction", "PLW", "variant", "seconds", "time vs baseline", "peak MiB", "memory vs baseline"],
        rows,
    )
    body = (
        f"Machine: {machine()}. N = {args.tokens} tokens, hidden {args.hidden}, fp32, forward + backward of the LM "
        f"head and the loss, best of {args.repeats}, each variant in its own process. Baseline: transformers' "
        "`ForCausalLMLoss` on materialised logits (completion-only labels). `torch_lce`: torch's chunked "
        "`linear_cross_entropy(reduction='none')` times the same per-token weights, for reference.\n"
        "Reproduce: `.venv/bin/python benchmarks/loss.py`.\n\n" + table
    )
    if args.quick:
        print(body)
    else:
        record("loss", "Loss: LM head + loss, forward and backward", body)


if __name__ == "__main__":
    main()
