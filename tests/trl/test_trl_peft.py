"""PEFT adapters through ``SFTTrainer(peft_config=...)``: at PLW 0, one SGD step of ``PLWSFTTrainer``
equals stock TRL's completion-only step (trainable parameters and loss) for LoRA, DoRA, IA3, prompt
tuning and P-tuning; at a fractional PLW, prompt tuning's virtual tokens weigh 0 (a hand computation);
prefix tuning, which stock TRL cannot train, is refused with a clear error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
from trl_harness import LEARNING_RATE, assert_same_parameters, last_train_logs, training_args

from plw_plugins.cli.builtin_data import instruction_rows
from plw_plugins.integrations.trl import PLWSFTConfig, PLWSFTTrainer

peft = pytest.importorskip("peft")

VIRTUAL_TOKENS = 8
PEFT_CONFIGS = {
    "lora": lambda: peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "dora": lambda: peft.LoraConfig(
        task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=True,
    ),
    "ia3": lambda: peft.IA3Config(
        task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
    ),
    "prompt_tuning": lambda: peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=VIRTUAL_TOKENS),
    "p_tuning": lambda: peft.PromptEncoderConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=VIRTUAL_TOKENS, encoder_hidden_size=16,
    ),
}


def peft_trainer(model_dir, tmp_path, peft_config, *, plw: float | None):
    """Stock ``SFTTrainer`` with TRL's completion-only loss (``plw=None``) or ``PLWSFTTrainer``, both
    wrapping the model with ``peft_config`` from the same seed."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if plw is None:
        trainer_cls, args = SFTTrainer, training_args(SFTConfig, tmp_path, completion_only_loss=True)
    else:
        trainer_cls, args = PLWSFTTrainer, training_args(PLWSFTConfig, tmp_path, prompt_loss_weight=plw)
    return trainer_cls(
        model=model, args=args, train_dataset=Dataset.from_list(instruction_rows(4)),
        processing_class=AutoTokenizer.from_pretrained(model_dir), peft_config=peft_config,
    )


def trainable(trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", PEFT_CONFIGS)
def test_plw_0_equals_stock(method, tiny_model_dir, tmp_path):
    stock = peft_trainer(tiny_model_dir, tmp_path / "stock", PEFT_CONFIGS[method](), plw=None)
    plw = peft_trainer(tiny_model_dir, tmp_path / "plw", PEFT_CONFIGS[method](), plw=0.0)
    initial = trainable(stock)
    assert initial and initial.keys() == trainable(plw).keys()
    for name, value in trainable(plw).items():
        torch.testing.assert_close(value, initial[name], rtol=0, atol=0, msg=f"{name}: not the same start")
    stock.train()
    plw.train()
    assert_same_parameters(trainable(stock), trainable(plw), initial)
    assert last_train_logs(plw)["loss"] == pytest.approx(last_train_logs(stock)["loss"], rel=1e-5)


def test_prompt_tuning_virtual_tokens_weigh_nothing(tiny_model_dir, tmp_path):
    """One SGD step at PLW 0.1 equals one step on sum(w * nll) / sum(w) computed here from the PEFT
    model's full logits: the positions of the virtual tokens (and the one predicting the first real
    token from them) weigh 0, labelled targets 1, the other real targets 0.1."""
    plw = 0.1
    trainer = peft_trainer(tiny_model_dir, tmp_path, PEFT_CONFIGS["prompt_tuning"](), plw=plw)
    batch = next(iter(trainer.get_train_dataloader()))  # all 4 rows: the same step whatever the order
    model = trainer.model
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape[1] == batch["input_ids"].shape[1] + VIRTUAL_TOKENS
    logits = logits[:, VIRTUAL_TOKENS:-1]  # the real positions that predict real tokens
    targets = batch["input_ids"][:, 1:]
    weights = torch.where(batch["labels"][:, 1:] != -100, 1.0, plw) * batch["attention_mask"][:, 1:]
    assert (weights == plw).any() and (weights == 1.0).any()
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    loss = (weights.reshape(-1) * nll).sum() / weights.sum()
    loss.backward()
    initial = trainable(trainer)
    expected = {name: (p - LEARNING_RATE * p.grad).detach() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    trainer.train()
    assert_same_parameters(trainable(trainer), expected, initial)
    assert last_train_logs(trainer)["loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_prefix_tuning_is_refused(tiny_model_dir, tmp_path):
    """Stock TRL cannot train prefix tuning (its virtual keys are dropped without a cache); we say so."""
    config = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=VIRTUAL_TOKENS)
    stock = peft_trainer(tiny_model_dir, tmp_path / "stock", config, plw=None)
    with pytest.raises(RuntimeError, match="must match the size"):
        stock.train()
    with pytest.raises(ValueError, match="peft_config: PREFIX_TUNING is not supported with the prompt loss weight"):
        peft_trainer(tiny_model_dir, tmp_path / "plw", peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8), plw=0.0)
