"""Test-only shim: let accelerate run FSDP and DeepSpeed on CPU processes (gloo), as CI has no GPU.

What it patches and why: accelerate's ``AcceleratorState.__init__`` switches to FSDP only from a
GPU-type multi-process state and to DeepSpeed only when not on CPU; on CPU it quietly runs DDP
instead (accelerate/state.py, "ACCELERATE_USE_DEEPSPEED ... and not cpu" and the list of MULTI_GPU
-like types before the FSDP switch). The wrapper below lets the original run with ``cpu=False`` (the
process group is already up with gloo, as ``use_cpu=True`` makes it; where the host reset the process
state before building its ``Accelerator``, as Axolotl's trainer does, the wrapper rebuilds it so) and then takes the FSDP branch
that the original skips for ``MULTI_CPU``; it also sets the device to ``cpu`` (FSDP1 refuses
``cpu:0``). Nothing else in accelerate, transformers, TRL or the engines is touched, so what the
tests exercise is the engines' real sharding, gathering and gradient reduction.

DeepSpeed also needs ``DS_ACCELERATOR=cpu`` in the environment before it is imported (``ENGINE_ENV``).
"""

from __future__ import annotations

import functools
import os

import torch

ENGINE_ENV = {"DS_ACCELERATOR": "cpu", "DS_BUILD_OPS": "0", "ACCELERATE_USE_CPU": "0"}
"""Environment of a process that runs an engine on CPU."""


def allow_fsdp_and_deepspeed_on_cpu() -> None:
    """Patch ``accelerate.state.AcceleratorState.__init__`` as the module docstring says (idempotent)."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__
    if getattr(original, "_plw_cpu_engines", False):
        return

    @functools.wraps(original)
    def __init__(self, *args, cpu: bool = False, fsdp_plugin=None, **kwargs):
        os.environ.pop("ACCELERATE_USE_CPU", None)  # it forces cpu=True, which rules DeepSpeed out
        if not PartialState._shared_state:  # reset by the host (Axolotl's trainer does): rebuild it on gloo
            PartialState(cpu=True, backend="gloo")
        original(self, *args, cpu=False, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
        self.device = torch.device("cpu")
        # Every later AcceleratorState() copies PartialState's shared state over its own.
        PartialState._shared_state.update(distributed_type=self.distributed_type, device=self.device)

    __init__._plw_cpu_engines = True
    AcceleratorState.__init__ = __init__


def full_parameters(trainer) -> dict[str, torch.Tensor] | None:
    """Every parameter of a transformers ``Trainer``'s model after training, whole, in float32, on rank 0
    (None elsewhere); a collective under FSDP and ZeRO-3, so every rank calls it."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = trainer.model_wrapped
    if isinstance(model, FullyShardedDataParallel):
        # accelerate's FSDP1 full state dict (offloaded to CPU) crashes in its clone on CPU-only processes.
        with FullyShardedDataParallel.summon_full_params(model, writeback=False):
            state = {name.replace("_fsdp_wrapped_module.", ""): p.detach().clone() for name, p in model.named_parameters()}
    else:
        state = trainer.accelerator.get_state_dict(model)
    if not trainer.accelerator.is_main_process:
        return None
    return {name: tensor.detach().float().clone() for name, tensor in state.items()}
