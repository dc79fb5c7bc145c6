"""Models whose LM head computes something besides ``F.linear(hidden, weight, bias)`` are refused by
``PLWSFTTrainer`` at construction, on TRL's fused-head path (TRL >= 1.16) and on the core's lean path,
with an error naming the model, the head and what differs. Dory (transformers >= 5.24) is the real
case: its head multiplies the logits by a learned per-token scale, exactly 1 at initialisation."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from refused_heads import HEAD_CLASS_NAMES, HEAD_KINDS, dory_model, with_refused_head
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl_harness import training_args

from plw_plugins import build_loss_masks_from_batch, prompt_weighted_loss_from_hidden
from plw_plugins.cli.builtin_data import instruction_rows
from plw_plugins.integrations.transformers import install_plw_forward
from plw_plugins.integrations.trl import PLWSFTConfig, PLWSFTTrainer

PATHS = ("fused", "lean") if PLWSFTTrainer.plw_fused_lm_head else ("lean",)


def model_with(kind: str, model_dir):
    if kind == "dory":
        model = dory_model(len(AutoTokenizer.from_pretrained(model_dir)))
        if model is None:
            pytest.skip("this transformers has no Dory (added in 5.24)")
        return model
    return with_refused_head(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), kind)


def expected_error(kind: str) -> str:
    if kind == "dory":
        return r"DoryForCausalLM: its LM head \(DoryLMHead\) holds the parameter 'logit_scale'.*not supported"
    return rf"LlamaForCausalLM: its LM head \({HEAD_CLASS_NAMES[kind]}\) .*this architecture is not supported"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["dory", *HEAD_KINDS])
def test_plw_sft_trainer_refuses_the_head(kind, path, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(PLWSFTTrainer, "plw_fused_lm_head", path == "fused")
    model = model_with(kind, tiny_model_dir)
    with pytest.raises(ValueError, match=expected_error(kind)):
        PLWSFTTrainer(
            model=model, args=training_args(PLWSFTConfig, tmp_path, prompt_loss_weight=0.1),
            train_dataset=Dataset.from_list(instruction_rows(4)), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        )


@pytest.mark.parametrize("kind", ["dory", *HEAD_KINDS])
def test_install_plw_forward_refuses_the_head(kind, tiny_model_dir):
    with pytest.raises(ValueError, match=expected_error(kind)):
        install_plw_forward(model_with(kind, tiny_model_dir))


def test_a_trained_dory_scale_is_what_the_lean_loss_would_miss(tiny_model_dir):
    """Why Dory is refused rather than accepted at initialisation: once its logit scale moves, the
    loss from the hidden state and the head's weight is no longer the model's loss."""
    model = model_with("dory", tiny_model_dir)
    input_ids = torch.randint(3, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": input_ids, "labels": input_ids.clone(), "attention_mask": torch.ones_like(input_ids)}
    masks = build_loss_masks_from_batch(batch)
    head = model.get_output_embeddings()

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            own = model(**batch).loss
            hidden = model.model(input_ids=input_ids, attention_mask=batch["attention_mask"]).last_hidden_state
            lean = prompt_weighted_loss_from_hidden(hidden, head.weight, masks, 1.0).loss
        return own, lean

    with torch.no_grad():
        head.weight.mul_(30)  # logits large enough that a scale on them moves the loss
    own, lean = losses()
    torch.testing.assert_close(own, lean, rtol=1e-5, atol=1e-5)  # scale 1: indistinguishable
    with torch.no_grad():
        head.logit_scale.mul_(torch.linspace(0.5, 2.0, head.logit_scale.numel()))
    own, lean = losses()
    assert (own - lean).abs() > 1e-2, (own, lean)
