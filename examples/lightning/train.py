"""Fine-tune a causal LM with the prompt loss weight in plain Python, then print the logged losses.

    python examples/lightning/train.py                     # the built-in tiny Llama and data, on CPU
    python examples/lightning/train.py --model PATH --data alpaca.json --prompt-loss-weight 0.01
"""

from __future__ import annotations

import argparse
import tempfile

import lightning.pytorch as L
from lightning.pytorch.loggers import CSVLogger
from sft_module import CausalLMModule, InstructionDataModule

from plw_plugins.integrations.lightning import PromptLossWeight


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a local Hugging Face causal LM folder (default: build the tiny Llama)")
    parser.add_argument("--data", help="an Alpaca-format JSON file (default: the built-in instruction data)")
    parser.add_argument("--prompt-loss-weight", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--log-dir", default="lightning_logs")
    args = parser.parse_args(argv)

    model_path = args.model
    if model_path is None:
        from plw_plugins.cli.tiny_model import build_tiny_llama

        model_path = tempfile.mkdtemp(prefix="tiny-llama-")
        build_tiny_llama(model_path)

    L.seed_everything(0)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        log_every_n_steps=4,
        logger=CSVLogger(args.log_dir),
        callbacks=[PromptLossWeight(prompt_loss_weight=args.prompt_loss_weight)],
    )
    trainer.fit(
        CausalLMModule(model_path, learning_rate=1e-3),
        InstructionDataModule(model_path, data_path=args.data, train_rows=128, val_rows=32),
    )
    for name, value in sorted(trainer.logged_metrics.items()):
        print(f"{name}: {float(value):.4f}")


if __name__ == "__main__":
    main()
