"""The core's LM-head checks (``plw_plugins.heads``) and ``prompt_weighted_loss_from_hidden`` given a
head module: a head is accepted only where it computes exactly ``F.linear(hidden, weight, bias)``."""

from __future__ import annotations

import pytest
import torch
from refused_heads import HEAD_CLASS_NAMES, HEAD_KINDS, LearnedTemperatureHead, dory_model, refused_head
from torch import nn

from plw_plugins import build_loss_masks, prompt_weighted_loss_from_hidden
from plw_plugins.heads import check_head_function, check_head_structure

HIDDEN, VOCAB = 16, 40


def batch(seed: int = 0) -> tuple[torch.Tensor, object]:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2, 9, HIDDEN, generator=generator)
    input_ids = torch.randint(0, VOCAB, (2, 9), generator=generator)
    labels = input_ids.clone()
    labels[:, :4] = -100
    return hidden, build_loss_masks(input_ids, labels, attention_mask=torch.ones_like(input_ids))


def linear(bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(HIDDEN, VOCAB, bias=bias)


def loss_and_gradients(head_or_weight, head: nn.Linear, hidden: torch.Tensor, masks, **options):
    head.zero_grad()
    hidden = hidden.clone().requires_grad_()
    result = prompt_weighted_loss_from_hidden(hidden, head_or_weight, masks, 0.1, **options)
    result.loss.backward()
    return result, hidden.grad, [p.grad.clone() for p in head.parameters()]


@pytest.mark.parametrize("bias", [True, False])
def test_a_plain_head_module_gives_the_weight_path_bit_for_bit(bias):
    hidden, masks = batch()
    head = linear(bias)
    by_module, hidden_grad, head_grads = loss_and_gradients(head, head, hidden, masks)
    by_weight, hidden_grad_w, head_grads_w = loss_and_gradients(
        head.weight, head, hidden, masks, lm_head_bias=head.bias)
    assert torch.equal(by_module.loss, by_weight.loss)
    assert torch.equal(by_module.prompt_loss, by_weight.prompt_loss)
    assert torch.equal(hidden_grad, hidden_grad_w)
    assert len(head_grads) == (2 if bias else 1)
    assert all(torch.equal(a, b) for a, b in zip(head_grads, head_grads_w))


def test_tied_embeddings_and_a_hook_that_changes_nothing_are_accepted():
    hidden, masks = batch()
    embedding = nn.Embedding(VOCAB, HIDDEN)
    head = nn.Linear(HIDDEN, VOCAB, bias=False)
    head.weight = embedding.weight
    seen = []
    head.register_forward_hook(lambda module, args, output: seen.append(module))
    by_module = prompt_weighted_loss_from_hidden(hidden, head, masks, 0.1)
    assert seen, "the hook was not called"
    by_weight = prompt_weighted_loss_from_hidden(hidden, embedding.weight, masks, 0.1)
    assert torch.equal(by_module.loss, by_weight.loss)


@pytest.mark.parametrize("kind", list(HEAD_KINDS))
def test_every_refused_kind_of_head_is_refused(kind):
    hidden, masks = batch()
    head = refused_head(kind, linear())
    with pytest.raises(ValueError, match=rf"the LM head {HEAD_CLASS_NAMES[kind]} .*this architecture is not supported"):
        prompt_weighted_loss_from_hidden(hidden, head, masks, 0.1)


def test_dory_head_is_refused_naming_its_logit_scale():
    model = dory_model(VOCAB)
    if model is None:
        pytest.skip("this transformers has no Dory (added in 5.24)")
    head = model.get_output_embeddings()
    _, masks = batch()
    hidden = torch.randn(2, 9, head.in_features)
    with pytest.raises(ValueError, match=r"the LM head DoryLMHead holds the parameter 'logit_scale' besides"):
        prompt_weighted_loss_from_hidden(hidden, head, masks, 0.1)


def test_either_check_alone_misses_a_case():
    """A learned scale of exactly 1 computes the plain map (only the structure shows it); a soft cap
    holds no parameter of its own (only the function shows it)."""
    hidden = torch.randn(8, HIDDEN)
    unit_scale = refused_head("unit_logit_scale", linear())
    check_head_function(unit_scale, hidden)
    with pytest.raises(ValueError, match="holds the parameter 'logit_scale'"):
        check_head_structure(unit_scale)
    capped = refused_head("soft_capping_in_forward", linear())
    check_head_structure(capped)
    with pytest.raises(ValueError, match="does not compute F.linear.*not a multiple.*as soft-capping does"):
        check_head_function(capped, hidden)


def test_a_frozen_temperature_is_refused_by_what_the_head_computes():
    head = refused_head("learned_temperature", linear())
    head.temperature.requires_grad_(False)
    check_head_structure(head)  # nothing trainable besides the weight and bias
    with pytest.raises(ValueError, match=r"LearnedTemperatureHead\) does not compute .*multiplied by 0.5"):
        check_head_function(head, torch.randn(8, HIDDEN), owner="TinyModel")


def test_a_head_that_transforms_its_input_is_refused():
    class Normalising(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = linear()

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            return self.proj(torch.nn.functional.normalize(hidden, dim=-1))

    with pytest.raises(ValueError, match="it transforms its input before its linear layer"):
        check_head_function(Normalising(), torch.randn(8, HIDDEN))


def test_a_hook_added_after_a_first_call_is_found():
    hidden, masks = batch()
    head = linear()
    prompt_weighted_loss_from_hidden(hidden, head, masks, 0.1)
    head.register_forward_hook(lambda module, args, output: output * 2)
    with pytest.raises(ValueError, match=r"the LM head Linear does not compute .*multiplied by 2"):
        prompt_weighted_loss_from_hidden(hidden, head, masks, 0.1)


def test_a_buffer_in_the_head_is_refused():
    head = LearnedTemperatureHead(HIDDEN, VOCAB)
    del head.temperature
    head.register_buffer("temperature", torch.tensor(2.0))
    with pytest.raises(ValueError, match="holds the buffer 'temperature'"):
        check_head_structure(head, owner="TinyModel")


def test_a_bias_beside_a_head_module_is_an_error():
    hidden, masks = batch()
    head = linear()
    with pytest.raises(ValueError, match="lm_head_bias was given with the LM head Linear as lm_head_weight"):
        prompt_weighted_loss_from_hidden(hidden, head, masks, 0.1, lm_head_bias=head.bias)
