"""The loss against transformers' own ``ForCausalLMLoss`` and an independent token-by-token reference."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.loss.loss_utils import ForCausalLMLoss

from plw_plugins import (
    build_loss_masks,
    prompt_weighted_loss,
    prompt_weighted_loss_from_hidden,
    prompt_weighted_loss_from_token_nll,
)

from .batches import batches, packed_batch, padded_batch, reference_loss

VOCAB = 17
HIDDEN = 8
# 0 or a weight fp32 can hold: below ~1e-38 a weight flushes to 0 in fp32 (the study's smallest is 5e-4).
WEIGHTS = st.one_of(st.just(0.0), st.just(1.0), st.floats(1e-6, 1.0))


def _logits(batch, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    rows, steps = batch.input_ids.shape
    return torch.randn(rows, steps, VOCAB, generator=generator, dtype=torch.float32).to(dtype).requires_grad_()


LAYOUTS = {
    "right-padded": lambda g: padded_batch(g, [7, 4, 6], [3, 2, 5], VOCAB),
    "left-padded": lambda g: padded_batch(g, [7, 4, 6], [3, 2, 5], VOCAB, left=True),
    "packed": lambda g: packed_batch(g, [5, 3, 6], [2, 1, 4], VOCAB),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("prompt_loss_weight", "labels_of"), [(0.0, "labels"), (1.0, "all_labels")])
def test_plw_0_and_1_equal_transformers_completion_only_and_all_token_loss(layout, prompt_loss_weight, labels_of):
    batch = LAYOUTS[layout](torch.Generator().manual_seed(1))
    logits = _logits(batch)
    masks = build_loss_masks(batch.input_ids, batch.labels, **batch.mask_kwargs())
    ours = prompt_weighted_loss(logits, masks, prompt_loss_weight).loss
    theirs = ForCausalLMLoss(logits, getattr(batch, labels_of), VOCAB)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    (grad_theirs,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(grad_ours, grad_theirs, atol=1e-6, rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(batch=batches(vocab=VOCAB), prompt_loss_weight=WEIGHTS, seed=st.integers(0, 1000))
def test_loss_equals_the_token_by_token_definition(batch, prompt_loss_weight, seed):
    logits = _logits(batch, seed)
    masks = build_loss_masks(batch.input_ids, batch.labels, **batch.mask_kwargs())
    result = prompt_weighted_loss(logits, masks, prompt_loss_weight)
    expected = reference_loss(logits, batch, prompt_loss_weight)
    torch.testing.assert_close(result.loss.double(), expected, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(result.loss) and torch.isfinite(result.prompt_loss) and torch.isfinite(result.completion_loss)


@settings(max_examples=40, deadline=None)
@given(batch=batches(vocab=VOCAB), prompt_loss_weight=WEIGHTS, seed=st.integers(0, 1000),
       chunk_size=st.sampled_from([1, 3, None]), with_bias=st.booleans())
def test_hidden_state_path_equals_the_logits_path_in_value_and_gradient(batch, prompt_loss_weight, seed, chunk_size,
                                                                        with_bias):
    generator = torch.Generator().manual_seed(seed)
    rows, steps = batch.input_ids.shape
    hidden = torch.randn(rows, steps, HIDDEN, generator=generator).requires_grad_()
    weight = torch.randn(VOCAB, HIDDEN, generator=generator).requires_grad_()
    bias = torch.randn(VOCAB, generator=generator).requires_grad_() if with_bias else None
    masks = build_loss_masks(batch.input_ids, batch.labels, **batch.mask_kwargs())
    inputs = [hidden, weight] + ([bias] if with_bias else [])

    lean = prompt_weighted_loss_from_hidden(hidden, weight, masks, prompt_loss_weight, lm_head_bias=bias,
                                            chunk_size=chunk_size, score_unweighted=True)
    logits = torch.nn.functional.linear(hidden, weight, bias)
    plain = prompt_weighted_loss(logits, masks, prompt_loss_weight)
    torch.testing.assert_close(lean.loss, plain.loss, atol=1e-5, rtol=1e-5)
    for field in ("prompt_loss", "completion_loss", "prompt_tokens", "completion_tokens", "weight_sum"):
        torch.testing.assert_close(getattr(lean, field), getattr(plain, field), atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(torch.autograd.grad(lean.loss, inputs), torch.autograd.grad(plain.loss, inputs)):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(batch=batches(vocab=VOCAB), prompt_loss_weight=WEIGHTS, splits=st.integers(1, 4),
       lean=st.booleans())
def test_micro_batches_with_the_step_normalizer_sum_to_the_full_batch_gradient(batch, prompt_loss_weight, splits,
                                                                                lean):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(VOCAB, HIDDEN, generator=generator).requires_grad_()
    hidden = torch.randn(*batch.input_ids.shape, HIDDEN, generator=generator)

    def loss_of(rows, normalizer=None):
        masks = build_loss_masks(batch.input_ids[rows], batch.labels[rows],
                                 **{k: v[rows] for k, v in batch.mask_kwargs().items()})
        if lean:
            return prompt_weighted_loss_from_hidden(hidden[rows], weight, masks, prompt_loss_weight,
                                                    normalizer=normalizer)
        return prompt_weighted_loss(hidden[rows] @ weight.T, masks, prompt_loss_weight, normalizer=normalizer)

    full = loss_of(slice(None))
    (full_grad,) = torch.autograd.grad(full.loss, weight)
    parts = [slice(i, i + 1) for i in range(batch.input_ids.shape[0])]
    step_total = sum(loss_of(rows).weight_sum for rows in parts)
    split_grad = torch.zeros_like(weight)
    for group in torch.tensor_split(torch.arange(len(parts)), min(splits, len(parts))):
        if len(group) == 0:
            continue
        rows = slice(int(group[0]), int(group[-1]) + 1)
        split_grad += torch.autograd.grad(loss_of(rows, normalizer=step_total).loss, weight)[0]
    torch.testing.assert_close(split_grad, full_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lean", [False, True])
def test_zero_weight_sum_gives_an_attached_zero_loss_and_zero_gradient(lean):
    input_ids = torch.tensor([[3, 4, 5, 6]])
    labels = torch.full_like(input_ids, -100)
    masks = build_loss_masks(input_ids, labels)
    hidden = torch.randn(1, 4, HIDDEN, requires_grad=True)
    weight = torch.randn(VOCAB, HIDDEN, requires_grad=True)
    if lean:
        result = prompt_weighted_loss_from_hidden(hidden, weight, masks, 0.0)
    else:
        result = prompt_weighted_loss(hidden @ weight.T, masks, 0.0)
    assert result.loss.item() == 0.0 and result.loss.requires_grad
    result.loss.backward()
    assert torch.count_nonzero(hidden.grad) == 0 and torch.count_nonzero(weight.grad) == 0
    assert result.weight_sum.item() == 0.0 and not math.isnan(result.completion_loss.item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_give_fp32_losses_close_to_fp32(dtype):
    batch = LAYOUTS["right-padded"](torch.Generator().manual_seed(2))
    masks = build_loss_masks(batch.input_ids, batch.labels, **batch.mask_kwargs())
    hidden = torch.randn(*batch.input_ids.shape, HIDDEN)
    weight = torch.randn(VOCAB, HIDDEN)
    exact = prompt_weighted_loss(hidden @ weight.T, masks, 0.3)
    low_logits = prompt_weighted_loss((hidden @ weight.T).to(dtype).requires_grad_(), masks, 0.3)
    low_hidden_in = hidden.to(dtype).requires_grad_()
    low_hidden = prompt_weighted_loss_from_hidden(low_hidden_in, weight.to(dtype), masks, 0.3)
    for result in (low_logits, low_hidden):
        assert result.loss.dtype == torch.float32
        torch.testing.assert_close(result.loss, exact.loss, atol=0.05, rtol=0.02)
    low_hidden.loss.backward()
    assert low_hidden_in.grad.dtype == dtype and torch.isfinite(low_hidden_in.grad.float()).all()


def test_lean_path_skips_zero_weight_rows_unless_asked_to_score_them():
    batch = LAYOUTS["right-padded"](torch.Generator().manual_seed(3))
    masks = build_loss_masks(batch.input_ids, batch.labels, **batch.mask_kwargs())
    hidden, weight = torch.randn(*batch.input_ids.shape, HIDDEN), torch.randn(VOCAB, HIDDEN)
    skipped = prompt_weighted_loss_from_hidden(hidden, weight, masks, 0.0)
    scored = prompt_weighted_loss_from_hidden(hidden, weight, masks, 0.0, score_unweighted=True)
    plain = prompt_weighted_loss(hidden @ weight.T, masks, 0.0)
    assert skipped.prompt_tokens.item() == 0 and skipped.prompt_loss.item() == 0.0
    assert scored.prompt_tokens.item() == masks.prompt.sum().item() > 0
    torch.testing.assert_close(scored.prompt_loss, plain.prompt_loss)
    torch.testing.assert_close(skipped.loss, plain.loss)


@settings(max_examples=40, deadline=None)
@given(batch=batches(vocab=VOCAB), prompt_loss_weight=WEIGHTS, seed=st.integers(0, 1000))
def test_token_nll_path_equals_the_logits_path_in_value_metrics_and_gradient(batch, prompt_loss_weight, seed):
    logits = _logits(batch, seed)
    masks = build_loss_masks(batch.input_ids, batch.labels, **batch.mask_kwargs())
    token_nll = -torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, masks.targets[..., None]).squeeze(-1)
    fused = prompt_weighted_loss_from_token_nll(token_nll, masks, prompt_loss_weight, normalizer=3.5)
    plain = prompt_weighted_loss(logits, masks, prompt_loss_weight, normalizer=3.5)
    for field in ("loss", "prompt_loss", "completion_loss", "prompt_tokens", "completion_tokens", "weight_sum"):
        torch.testing.assert_close(getattr(fused, field), getattr(plain, field), atol=1e-5, rtol=1e-5)
    if plain.loss.requires_grad and fused.loss.requires_grad:
        (ours,), (theirs,) = torch.autograd.grad(fused.loss, logits), torch.autograd.grad(plain.loss, logits)
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_token_nll_path_checks_shapes_and_that_weighted_targets_were_scored():
    masks = build_loss_masks(torch.tensor([[1, 2, 3, 4]]), torch.tensor([[-100, -100, 3, 4]]))
    with pytest.raises(ValueError, match=r"token_nll has shape \(1, 4\) but the masks have shape \(1, 3\)"):
        prompt_weighted_loss_from_token_nll(torch.zeros(1, 4), masks, 0.1)
    completion_only = masks.completion
    with pytest.raises(ValueError, match="scored leaves out targets of weight above 0"):
        prompt_weighted_loss_from_token_nll(torch.zeros(1, 3), masks, 0.1, scored=completion_only)
    at_zero = prompt_weighted_loss_from_token_nll(torch.ones(1, 3), masks, 0.0, scored=completion_only)
    assert at_zero.prompt_tokens.item() == 0 and at_zero.completion_loss.item() == 1.0
