"""The Lightning mixin and LM heads that compute something besides ``F.linear(hidden, weight, bias)``.

With ``lm_head=`` (the memory-lean path, which reads the head's weight) such a head is refused before
any step trains, naming the head and what differs. Given the logits instead, the loss is computed
from what the model itself output, whatever its head does: Dory, whose head multiplies the logits by
a learned per-token scale, then trains exactly as with its own loss, the scale's gradient included."""

from __future__ import annotations

import pytest
import torch
from plw_lightning_testlib import (
    TinyLM,
    all_token_labels,
    assert_gradients_close,
    gradients,
    hf_loss,
    load_tokenizer,
    loader,
    make_batch,
    parameters,
    trainer,
)
from refused_heads import HEAD_CLASS_NAMES, HEAD_KINDS, dory_model, with_refused_head

from plw_plugins.integrations.lightning import PromptLossWeight


def dory_or_skip(model_dir) -> torch.nn.Module:
    model = dory_model(len(load_tokenizer(model_dir)))
    if model is None:
        pytest.skip("this transformers has no Dory (added in 5.24)")
    return model.train()


@pytest.mark.parametrize("kind", ["dory", *HEAD_KINDS])
def test_lean_path_refuses_the_head_before_any_step(kind, tiny_model_dir):
    module = TinyLM(str(tiny_model_dir), mode="lean", learning_rate=1.0)
    if kind == "dory":
        module.model = dory_or_skip(tiny_model_dir)
        expected = r"the LM head DoryLMHead holds the parameter 'logit_scale'.*this architecture is not supported"
    else:
        with_refused_head(module.model, kind)
        expected = rf"the LM head {HEAD_CLASS_NAMES[kind]} .*this architecture is not supported"
    before = parameters(module)
    batches = loader([make_batch(load_tokenizer(tiny_model_dir), [0, 4])])
    with pytest.raises(ValueError, match=expected):
        trainer(max_steps=1, callbacks=[PromptLossWeight(prompt_loss_weight=0.1)]).fit(module, train_dataloaders=batches)
    assert all(torch.equal(value, before[name]) for name, value in parameters(module).items())


@pytest.mark.parametrize("plw", [0.0, 1.0])
def test_dory_logits_give_dorys_own_loss_and_gradients(plw, tiny_model_dir):
    dory = dory_or_skip(tiny_model_dir)
    head = dory.get_output_embeddings()
    with torch.no_grad():  # a trained head: logits large enough, and a scale that has moved from 1
        head.weight.mul_(30)
        head.logit_scale.mul_(torch.linspace(0.5, 2.0, head.logit_scale.numel()))
    reference = dory_or_skip(tiny_model_dir)
    reference.load_state_dict(dory.state_dict())
    module = TinyLM(str(tiny_model_dir), mode="output")
    module.model = dory
    batch = make_batch(load_tokenizer(tiny_model_dir), [0, 3, 4])
    trainer(max_steps=1, callbacks=[PromptLossWeight(prompt_loss_weight=plw)]).fit(module, train_dataloaders=loader([batch]))

    expected = hf_loss(reference, batch, batch["labels"] if plw == 0.0 else all_token_labels(batch))
    assert module.step_losses[0] == pytest.approx(float(expected.detach()), rel=1e-5)
    expected_gradients = gradients(reference, expected)
    assert expected_gradients["lm_head.logit_scale"].abs().max() > 0
    assert_gradients_close(module.first_gradients, expected_gradients, rtol=1e-4, atol=1e-6)
