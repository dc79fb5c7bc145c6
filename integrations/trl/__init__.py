"""The prompt loss weight for TRL's ``SFTTrainer`` (TRL 1.9 to 1.16).

    from plw_plugins.integrations.trl import PLWSFTConfig, PLWSFTTrainer
    args = PLWSFTConfig(output_dir="out", prompt_loss_weight=0.1)
    PLWSFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train()

``plw-plugins sft`` is ``trl sft`` with this trainer (see ``cli.py``).
"""

from .config import PLWSFTConfig, PLWTrlParser
from .trainer import PLWSFTTrainer

__all__ = ["PLWSFTConfig", "PLWSFTTrainer", "PLWTrlParser"]
