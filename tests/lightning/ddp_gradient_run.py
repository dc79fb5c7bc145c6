"""One rank of the two-process DDP tests (launched by torch.distributed.run from
test_lightning_ddp.py): a real Trainer with strategy="ddp" on CPU (gloo), each rank training on its
own data; rank 0 saves the gradients of the first step, after DDP's averaging and the callback's
rescaling, and the parameters after training.

    python -m torch.distributed.run --nproc_per_node 2 ddp_gradient_run.py MODEL_DIR PLW OUT_FILE [accumulate]

Without ``accumulate`` each rank takes one batch of RANK_ROWS at a learning rate of 0; with it, two
micro-batches of RANK_MICRO_BATCH_ROWS in one window of ``accumulate_grad_batches=2``, with SGD at a
learning rate of 1 and gradient clipping at ACCUMULATE_CLIP.
"""

from __future__ import annotations

import sys

import torch
from plw_lightning_testlib import TinyLM, load_tokenizer, loader, parameters, rank_batches, rank_micro_batches, trainer

from plw_plugins.integrations.lightning import PromptLossWeight

ACCUMULATE_CLIP = 0.05


def main(model_dir: str, plw: float, out_file: str, accumulate: bool) -> None:
    module = TinyLM(model_dir, learning_rate=1.0 if accumulate else 0.0)
    settings = dict(accumulate_grad_batches=2, gradient_clip_val=ACCUMULATE_CLIP) if accumulate else {}
    ddp = trainer(
        max_epochs=1,
        devices=2,
        strategy="ddp",
        use_distributed_sampler=False,
        callbacks=[PromptLossWeight(prompt_loss_weight=plw)],
        **settings,
    )
    tokenizer = load_tokenizer(model_dir)
    batches = rank_micro_batches(tokenizer)[ddp.global_rank] if accumulate else [rank_batches(tokenizer)[ddp.global_rank]]
    ddp.fit(module, train_dataloaders=loader(batches))
    if ddp.global_rank == 0:
        torch.save(
            {"gradients": module.first_gradients, "parameters": parameters(module), "world_size": ddp.world_size,
             "steps": ddp.global_step},
            out_file,
        )


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:] == ["accumulate"])
