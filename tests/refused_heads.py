"""LM heads that compute something besides ``F.linear(hidden, weight, bias)``, which every entry point
must refuse, and models that carry them.

The kinds: a learned temperature; a learned per-token logit scale that is exactly 1 at
initialisation (as Dory's is: the head's output cannot tell it from a plain one until it trains);
soft-capping in the head's ``forward`` (no parameter at all); a plain ``nn.Linear`` with a forward
hook that scales its output. Dory itself (transformers >= 5.24) is built by ``dory_model``.

This file needs only torch and transformers, so that it also serves as a saved model's remote code
(``save_with_refused_head``): that is how ``axolotl train`` loads a Llama with such a head.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaForCausalLM


class LearnedTemperatureHead(nn.Linear):
    """Divides the logits by a learned temperature, 2 at initialisation."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.temperature = nn.Parameter(torch.tensor(2.0))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden) / self.temperature


class UnitLogitScaleHead(nn.Linear):
    """Multiplies each token's logit by a learned scale, exactly 1 at initialisation."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.logit_scale = nn.Parameter(torch.ones(out_features))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden) * self.logit_scale


class SoftCappedHead(nn.Linear):
    """Caps the logits at +-3 with tanh in its forward; it holds no parameter besides weight and bias."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return 3.0 * torch.tanh(super().forward(hidden) / 3.0)


def halve_output(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output * 0.5


def hooked_head(in_features: int, out_features: int, bias: bool = False) -> nn.Linear:
    """A plain ``nn.Linear`` whose forward hook halves its output."""
    head = nn.Linear(in_features, out_features, bias=bias)
    head.register_forward_hook(halve_output)
    return head


HEAD_KINDS = {
    "learned_temperature": LearnedTemperatureHead,
    "unit_logit_scale": UnitLogitScaleHead,
    "soft_capping_in_forward": SoftCappedHead,
    "forward_hook": hooked_head,
}
"""Each kind's constructor, called as ``nn.Linear`` is: ``(in_features, out_features, bias=...)``."""

HEAD_CLASS_NAMES = {"learned_temperature": "LearnedTemperatureHead", "unit_logit_scale": "UnitLogitScaleHead",
                    "soft_capping_in_forward": "SoftCappedHead", "forward_hook": "Linear"}
"""The class each kind's head has, which the errors name."""


def refused_head(kind: str, like: nn.Linear) -> nn.Module:
    """A head of ``kind`` with the weight and bias of ``like`` (shared, so tied embeddings stay tied)."""
    head = HEAD_KINDS[kind](like.in_features, like.out_features, bias=like.bias is not None)
    head.weight = like.weight
    if like.bias is not None:
        head.bias = like.bias
    return head


class RefusedHeadLlamaForCausalLM(LlamaForCausalLM):
    """A Llama whose LM head is of the kind its config names under ``refused_head``."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.lm_head = refused_head(config.refused_head, self.lm_head)


def with_refused_head(model: nn.Module, kind: str) -> nn.Module:
    """``model`` (a ``*ForCausalLM``) with its LM head replaced by one of ``kind``."""
    model.set_output_embeddings(refused_head(kind, model.get_output_embeddings()))
    return model


def save_with_refused_head(model_dir: Path, kind: str, out_dir: Path) -> Path:
    """A copy of the saved Llama in ``model_dir`` that loads (with ``trust_remote_code``) as a
    ``RefusedHeadLlamaForCausalLM`` with a head of ``kind``; this file is its remote code."""
    shutil.copytree(model_dir, out_dir)
    shutil.copy(__file__, out_dir / "modeling_refused_head.py")
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    config.update(refused_head=kind, architectures=["RefusedHeadLlamaForCausalLM"],
                  auto_map={"AutoModelForCausalLM": "modeling_refused_head.RefusedHeadLlamaForCausalLM"})
    config_path.write_text(json.dumps(config, indent=2))
    return out_dir


def dory_model(vocab_size: int) -> nn.Module | None:
    """A tiny random ``DoryForCausalLM`` in fp32 (its head has a learned per-token logit scale), or
    ``None`` where this transformers has no Dory (before 5.24)."""
    try:
        from transformers import DoryConfig, DoryForCausalLM
    except ImportError:
        return None
    config = DoryConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                        n_input_layers=1, n_recurrent_layers=1, n_output_layers=1, n_recurrent_loops=1,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256, sliding_window=16,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    return DoryForCausalLM(config).float()
