"""One rank of the two-process DDP test (launched by torch.distributed.run from
test_lightning_ddp.py): a real Trainer with strategy="ddp" on CPU (gloo), each rank training on its
own batch of RANK_ROWS; rank 0 saves the gradients of the first step, after DDP's averaging.

    python -m torch.distributed.run --nproc_per_node 2 ddp_gradient_run.py MODEL_DIR PLW OUT_FILE
"""

from __future__ import annotations

import sys

import torch
from plw_lightning_testlib import TinyLM, load_tokenizer, loader, rank_batches, trainer

from plw_plugins.integrations.lightning import PromptLossWeight


def main(model_dir: str, plw: float, out_file: str) -> None:
    module = TinyLM(model_dir)
    ddp = trainer(
        max_steps=1,
        devices=2,
        strategy="ddp",
        use_distributed_sampler=False,
        callbacks=[PromptLossWeight(prompt_loss_weight=plw)],
    )
    batch = rank_batches(load_tokenizer(model_dir))[ddp.global_rank]
    ddp.fit(module, train_dataloaders=loader([batch]))
    if ddp.global_rank == 0:
        torch.save({"gradients": module.first_gradients, "world_size": ddp.world_size}, out_file)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
