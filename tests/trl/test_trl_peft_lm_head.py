"""PEFT: LoRA with ``modules_to_save`` holding the LM head (and the embeddings) trains the copy the
model uses, exactly as stock TRL does at prompt loss weights 0 and 1; LoRA on the LM head itself is
refused, since the loss reads the head's weight and would ignore the adapter."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
from trl_harness import PARAMETER_TOLERANCE, training_args

from plw_plugins.cli.builtin_data import instruction_rows
from plw_plugins.integrations.transformers import install_plw_forward
from plw_plugins.integrations.trl import PLWSFTConfig, PLWSFTTrainer

peft = pytest.importorskip("peft", reason="the PEFT tests need peft (the dev extra installs it)")


def lora(modules_to_save: list[str] | None, target_modules: list[str]) -> "peft.LoraConfig":
    return peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=target_modules,
                           modules_to_save=modules_to_save, task_type="CAUSAL_LM", init_lora_weights=False)


def train_peft_step(model_dir, output_dir, config, *, plw: float | None, **overrides) -> dict[str, torch.Tensor]:
    """One SGD step of stock SFTTrainer (``plw=None``) or PLWSFTTrainer on a PEFT model; its trainable parameters after."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if plw is None:
        trainer_cls, args = SFTTrainer, training_args(SFTConfig, output_dir, **overrides)
    else:
        trainer_cls, args = PLWSFTTrainer, training_args(PLWSFTConfig, output_dir, prompt_loss_weight=plw, **overrides)
    trainer = trainer_cls(model=model, args=args, train_dataset=Dataset.from_list(instruction_rows(4)),
                          processing_class=AutoTokenizer.from_pretrained(model_dir), peft_config=config)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    moved = max((after[name] - before[name]).abs().max().item() for name in after)
    assert moved > 100 * PARAMETER_TOLERANCE, f"the step moved the trainable parameters by only {moved}"
    return after


@pytest.mark.parametrize("modules_to_save", [["lm_head"], ["embed_tokens", "lm_head"]], ids=["lm_head", "embed_and_lm_head"])
@pytest.mark.parametrize("plw", [0.0, 1.0])
def test_lora_with_modules_to_save_equals_stock(modules_to_save, plw, tiny_model_dir, tmp_path):
    config = lora(modules_to_save, ["q_proj", "v_proj"])
    stock = train_peft_step(tiny_model_dir, tmp_path / "stock", config, plw=None, completion_only_loss=plw == 0.0)
    ours = train_peft_step(tiny_model_dir, tmp_path / "plw", config, plw=plw)
    assert stock.keys() == ours.keys()
    assert any("modules_to_save" in name and "lm_head" in name for name in ours), sorted(ours)
    for name in stock:
        difference = (stock[name] - ours[name]).abs().max().item()
        assert difference <= PARAMETER_TOLERANCE, f"{name} differs by {difference}"


def test_lora_on_the_lm_head_is_refused(tiny_model_dir):
    """The shared transformers layer refuses it at construction (TRL refuses it too, before us, with its own message)."""
    model = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora(None, ["q_proj", "lm_head"]))
    with pytest.raises(ValueError, match="not a plain torch.nn.Linear.*leave the LM head out of the adapter's target"):
        install_plw_forward(model)
