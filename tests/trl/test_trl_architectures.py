"""Every causal-LM architecture that transformers can build tiny either gives the model's own loss
and gradients through the adapter's loss path (PLW 0: the masked loss, PLW 1: the all-token loss), or
is refused at construction with a message naming what differs. Enumerated from
``AutoModelForCausalLM``'s mapping (tiny_architectures.py), not from a list of ours; architectures
that cannot be built tiny offline, or whose own forward fails on the tiny config, are skipped with
the reason, and counted."""

from __future__ import annotations

import collections

import pytest
import torch
from tiny_architectures import VOCAB, build_tiny, causal_lm_architectures

from plw_plugins import build_loss_masks_from_batch
from plw_plugins.integrations.transformers import PLWRequest, install_plw_forward
from plw_plugins.roles import LossWeights

ARCHITECTURES = causal_lm_architectures()
OUTCOMES: dict[str, str] = {}
DIFFERENCES = (
    "transforms its LM head's output into its logits",
    "the hidden state it gives its LM head is not its body's last hidden state",
    "called its LM head",
    "its logits have shape",
    "not a plain torch.nn.Linear",
    "besides its linear layer's weight and bias",
    "does not compute F.linear(hidden, weight, bias)",
    "has no LM head",
    "exposes no model body",
)
SOFT_CAPPING = "transforms its LM head's output into its logits.*soft-capping"
MUST_BE_REFUSED = {
    "gemma2": SOFT_CAPPING,
    "recurrent_gemma": SOFT_CAPPING,
    "dory": r"DoryForCausalLM: its LM head \(DoryLMHead\) holds the parameter 'logit_scale'",  # transformers >= 5.24
}


def batch(vocab: int) -> dict[str, torch.Tensor]:
    """Two rows of 10 tokens, the second padded by 3; the first 4 tokens of each are prompt."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, vocab, (2, 10), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -3:] = 0
    input_ids[1, -3:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :4] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def loss_and_gradients(model: torch.nn.Module, labels: torch.Tensor | None = None, **inputs):
    """``(loss, gradients)``: with ``labels``, the mean next-token cross-entropy over them computed from
    the model's own logits (some architectures' built-in losses do not shift the labels); else the
    ``loss`` the model returns (the prompt-weighted one, given a ``plw_request``)."""
    model.zero_grad()
    output = model(**inputs)
    if labels is None:
        loss = output.loss
    else:
        logits = output.logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_architecture_equals_its_own_loss_or_is_refused(model_type):
    model, reason = build_tiny(model_type)
    if model is None:
        OUTCOMES[model_type] = "skipped"
        pytest.skip(reason)
    head = model.get_output_embeddings()
    vocab = min(VOCAB, head.weight.shape[0]) if head is not None else VOCAB
    inputs = batch(vocab)
    all_tokens = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    stock = {}
    try:
        for plw, labels in ((0.0, inputs["labels"]), (1.0, all_tokens)):
            stock[plw] = loss_and_gradients(model, input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                            labels=labels)
    except Exception as error:  # noqa: BLE001 - the model's own forward: skipped with the reason
        OUTCOMES[model_type] = "skipped"
        pytest.skip(f"its own forward fails on the tiny config: {type(error).__name__}: {str(error)[:200]}")
    try:
        install_plw_forward(model)
    except ValueError as error:
        OUTCOMES[model_type] = "refused"
        assert any(difference in str(error) for difference in DIFFERENCES), str(error)
        return
    assert model_type not in MUST_BE_REFUSED
    masks = build_loss_masks_from_batch(inputs)
    for plw, (expected_loss, expected_gradients) in stock.items():
        request = PLWRequest(masks=masks, loss_weights=LossWeights(prompt=plw))
        loss, gradients = loss_and_gradients(model, input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                             plw_request=request)
        torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
        assert gradients.keys() == expected_gradients.keys()
        for name, gradient in gradients.items():
            scale = expected_gradients[name].abs().max().item()  # float noise grows with the gradient's size
            torch.testing.assert_close(gradient, expected_gradients[name], rtol=1e-4, atol=1e-4 * scale + 1e-7,
                                       msg=lambda message, name=name: f"{name}: {message}")
    OUTCOMES[model_type] = "equal"


@pytest.mark.parametrize("model_type", [model_type for model_type in MUST_BE_REFUSED if model_type in ARCHITECTURES])
def test_architectures_that_must_be_refused_are(model_type):
    model, reason = build_tiny(model_type)
    assert model is not None, reason
    with pytest.raises(ValueError, match=MUST_BE_REFUSED[model_type]):
        install_plw_forward(model)


def test_most_architectures_are_covered():
    """Runs after the parametrised test: most architectures are built tiny, each with one outcome."""
    if len(OUTCOMES) < len(ARCHITECTURES):
        pytest.skip("the per-architecture tests were not all run")
    counts = collections.Counter(OUTCOMES.values())
    print(f"\n{len(ARCHITECTURES)} causal-LM architectures: {dict(counts)}")
    assert sum(counts.values()) == len(ARCHITECTURES)
    assert counts["equal"] > 2 * counts["skipped"], counts
