"""Every causal-LM architecture transformers maps in ``AutoModelForCausalLM``, built tiny from its own
default config: the size keys the config has are shrunk (hidden size, layers, heads, vocabulary,
experts...), everything else is the architecture's default. Used by test_trl_architectures.py."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Any

import torch

VOCAB = 96
MAX_PARAMETERS = 4_000_000
"""A config still larger than this after shrinking cannot be built tiny with the generic keys below."""
BUILD_SECONDS = 20
"""A config that takes longer to build is not tiny (some keep sizes under keys of their own)."""


class BuildTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: int):
    def expire(*_: Any) -> None:
        raise BuildTimeout(f"building took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

SHRINK: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 32, "d_model": 32, "n_embd": 32, "embed_dim": 32, "dim": 32, "model_dim": 32,
    "num_hidden_layers": 2, "num_layers": 2, "n_layer": 2, "n_layers": 2, "decoder_layers": 2,
    "num_attention_heads": 4, "n_head": 4, "n_heads": 4, "decoder_attention_heads": 4, "num_heads": 4,
    "num_key_value_heads": 2, "num_kv_heads": 2, "head_dim": 8, "kv_channels": 8,
    "intermediate_size": 64, "ffn_dim": 64, "n_inner": 64, "decoder_ffn_dim": 64, "ffn_hidden_size": 64,
    "moe_intermediate_size": 16, "shared_expert_intermediate_size": 16, "expert_intermediate_size": 16,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "moe_topk": 2, "n_shared_experts": 1, "n_group": 1, "topk_group": 1,
    "q_lora_rank": 16, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 8,
    "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 8, "linear_value_head_dim": 8,
    "mamba_n_heads": 4, "mamba_d_head": 8, "mamba_d_state": 8, "state_size": 8, "ssm_state_size": 8,
    "mamba_expand": 2, "lru_width": 32, "block_types": None, "attention_window_size": 16, "sliding_window": 16,
    "max_position_embeddings": 128, "n_positions": 128, "max_seq_len": 128,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 1,
    "tie_word_embeddings": False, "use_cache": False,
}


def causal_lm_architectures() -> list[str]:
    """The model types of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``, in order."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return list(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def build_tiny(model_type: str) -> tuple[torch.nn.Module | None, str]:
    """``(model, "")`` for a tiny fp32 model of ``model_type`` in eval mode, or ``(None, reason)``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        default = AutoConfig.for_model(model_type)
    except Exception as error:  # noqa: BLE001 - any failure is a reason to skip, reported
        return None, f"its default config cannot be built: {type(error).__name__}: {error}"
    keys = set(default.to_dict())
    text_key = next((key for key in ("text_config", "decoder") if isinstance(getattr(default, key, None), object)
                     and hasattr(getattr(default, key, None), "to_dict")), None)
    overrides = {key: value for key, value in SHRINK.items() if key in keys and not (value is None and key != "block_types")}
    if "block_types" in keys:
        overrides["block_types"] = ["recurrent", "attention"]
    if text_key:
        text_keys = set(getattr(default, text_key).to_dict())
        overrides[text_key] = {key: value for key, value in SHRINK.items() if key in text_keys and value is not None}
    try:
        config = AutoConfig.for_model(model_type, **overrides)
        torch.manual_seed(0)
        with time_limit(BUILD_SECONDS):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except Exception as error:  # noqa: BLE001
        return None, f"no tiny model from its config: {type(error).__name__}: {str(error)[:200]}"
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        return None, f"still {count} parameters with the generic size keys shrunk"
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else VOCAB
    if vocab > 4 * VOCAB:
        return None, f"a vocabulary of {vocab} after shrinking"
    return model.eval(), ""
