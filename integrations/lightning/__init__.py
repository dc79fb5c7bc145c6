"""Lightning adapter: the ``PromptLossWeight`` callback and the module-side ``PromptLossWeightMixin``.

``PromptLossWeight`` here subclasses ``lightning.pytorch.Callback`` (``pip install lightning``).
Users of the standalone ``pytorch_lightning`` package import theirs from
``plw_plugins.integrations.lightning.pytorch_lightning``; the mixin serves both. Usage::

    class MyModule(PromptLossWeightMixin, L.LightningModule):
        def training_step(self, batch, batch_idx):
            output = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return self.prompt_weighted_loss(output, batch)

    L.Trainer(callbacks=[PromptLossWeight(prompt_loss_weight=0.1)]).fit(MyModule(), datamodule)
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .callback import PromptLossWeightHooks, bind_callback
from .mixin import PromptLossWeightMixin

__all__ = ["PromptLossWeight", "PromptLossWeightHooks", "PromptLossWeightMixin"]

# Made at import, not on first use, so that LightningCLI resolves the short name
# `--trainer.callbacks+=PromptLossWeight` once the module's file imports the mixin from here.
if importlib.util.find_spec("lightning") is not None:
    import lightning.pytorch

    PromptLossWeight = bind_callback(lightning.pytorch.Callback, __name__)
else:

    def __getattr__(name: str) -> Any:
        if name == "PromptLossWeight":
            raise ImportError(
                "plw_plugins.integrations.lightning.PromptLossWeight subclasses lightning.pytorch.Callback, but the "
                "`lightning` package is not installed: pip install lightning, or, with pytorch_lightning, use "
                "`from plw_plugins.integrations.lightning.pytorch_lightning import PromptLossWeight`"
            )
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
