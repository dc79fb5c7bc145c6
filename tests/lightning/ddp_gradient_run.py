"""One rank of the two-process DDP tests (launched by torch.distributed.run from
test_lightning_ddp.py): a real Trainer with strategy="ddp" on CPU (gloo), each rank training on its
own data; rank 0 saves the gradients of the first step, after DDP's averaging and the callback's
rescaling, and the parameters after training.

    python -m torch.distributed.run --nproc_per_node 2 ddp_gradient_run.py MODEL_DIR PLW OUT_FILE [accumulate|roles]

Without a mode each rank takes one batch of RANK_ROWS at a learning rate of 0; with ``accumulate``,
two micro-batches of RANK_MICRO_BATCH_ROWS in one window of ``accumulate_grad_batches=2``, with SGD at
a learning rate of 1 and gradient clipping at ACCUMULATE_CLIP; with ``roles``, rank 0 takes the first
two conversations of the chat batch and rank 1 the third, at ROLE_KEYS (PLW is then unused).
"""

from __future__ import annotations

import sys

import torch
from plw_lightning_testlib import (
    ROLE_KEYS,
    TinyLM,
    load_tokenizer,
    loader,
    make_chat_batch,
    parameters,
    rank_batches,
    rank_micro_batches,
    rows_of,
    trainer,
)

from plw_plugins.integrations.lightning import PromptLossWeight

ACCUMULATE_CLIP = 0.05


def main(model_dir: str, plw: float, out_file: str, mode: str) -> None:
    accumulate = mode == "accumulate"
    module = TinyLM(model_dir, learning_rate=1.0 if accumulate else 0.0)
    settings = dict(accumulate_grad_batches=2, gradient_clip_val=ACCUMULATE_CLIP) if accumulate else {}
    keys = ROLE_KEYS if mode == "roles" else dict(prompt_loss_weight=plw)
    ddp = trainer(
        max_epochs=1,
        devices=2,
        strategy="ddp",
        use_distributed_sampler=False,
        callbacks=[PromptLossWeight(**keys)],
        **settings,
    )
    tokenizer = load_tokenizer(model_dir)
    if mode == "roles":
        batches = [rows_of(make_chat_batch(tokenizer), [slice(0, 2), slice(2, 3)][ddp.global_rank])]
    elif accumulate:
        batches = rank_micro_batches(tokenizer)[ddp.global_rank]
    else:
        batches = [rank_batches(tokenizer)[ddp.global_rank]]
    ddp.fit(module, train_dataloaders=loader(batches))
    if ddp.global_rank == 0:
        torch.save(
            {"gradients": module.first_gradients, "parameters": parameters(module), "world_size": ddp.world_size,
             "steps": ddp.global_step},
            out_file,
        )


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")
