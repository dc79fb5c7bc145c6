"""``PromptLossWeight`` for the standalone ``pytorch_lightning`` package (``import pytorch_lightning as pl``).

The same callback as ``plw_plugins.integrations.lightning.PromptLossWeight`` (one implementation,
``PromptLossWeightHooks``), subclassing ``pytorch_lightning.Callback``, which a
``pytorch_lightning.Trainer`` requires. LightningCLI: ``class_path:
plw_plugins.integrations.lightning.pytorch_lightning.PromptLossWeight``, or the short name once this
module is imported.
"""

from __future__ import annotations

import pytorch_lightning

from .callback import bind_callback
from .mixin import PromptLossWeightMixin

__all__ = ["PromptLossWeight", "PromptLossWeightMixin"]

PromptLossWeight = bind_callback(pytorch_lightning.Callback, __name__)
