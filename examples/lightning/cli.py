"""Fine-tune with the prompt loss weight from LightningCLI.

    plw-plugins tiny-model tiny-llama          # or point model_path / tokenizer_path at your model
    python examples/lightning/cli.py fit --config examples/lightning/config.yaml

Override any key on the command line, e.g. ``--trainer.callbacks.prompt_loss_weight=0.01`` after the
config, or add the callback without a config: ``--trainer.callbacks+=PromptLossWeight
--trainer.callbacks.prompt_loss_weight=0.1``.
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI
from sft_module import CausalLMModule, InstructionDataModule


def main() -> None:
    LightningCLI(CausalLMModule, InstructionDataModule, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
