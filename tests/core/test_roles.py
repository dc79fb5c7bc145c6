"""Role weights, per-message weights, the completion weight and the token-count normaliser, against
an independent token-by-token reference of the rule in ``roles.LossWeights``."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from plw_plugins import (
    IGNORE_INDEX,
    LossWeights,
    Role,
    build_loss_masks,
    prompt_weighted_loss,
    prompt_weighted_loss_from_hidden,
    prompt_weighted_loss_from_token_nll,
)
from plw_plugins.config import PromptLossWeightConfig
from plw_plugins.metrics import LossMetrics
from plw_plugins.roles import NO_MESSAGE_WEIGHT

from .batches import batches

VOCAB = 17
HIDDEN = 8
# 0 or a weight fp32 can hold (below ~1e-38 a weight flushes to 0 in fp32, and token_count would differ).
WEIGHT = st.one_of(st.just(0.0), st.just(1.0), st.floats(1e-6, 1.0))
MAYBE_WEIGHT = st.one_of(st.none(), WEIGHT)


@st.composite
def loss_weights(draw) -> LossWeights:
    return LossWeights(
        prompt=draw(WEIGHT),
        completion=draw(st.one_of(st.just(1.0), st.floats(0.01, 1.0))),
        system=draw(MAYBE_WEIGHT), tool=draw(MAYBE_WEIGHT), template=draw(MAYBE_WEIGHT), history=draw(MAYBE_WEIGHT),
        normalization=draw(st.sampled_from(["weight_sum", "token_count"])),
    )


def roles_of(batch, seed: int, with_message_weights: bool) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    roles = torch.randint(0, len(Role), batch.input_ids.shape, generator=generator)
    message_weights = torch.full(batch.input_ids.shape, NO_MESSAGE_WEIGHT)
    if with_message_weights:
        chosen = torch.rand(batch.input_ids.shape, generator=generator) < 0.3
        message_weights = torch.where(chosen, torch.rand(batch.input_ids.shape, generator=generator), message_weights)
    return roles, message_weights


def reference_weight(weights: LossWeights, trained: bool, role: int, message_weight: float) -> float:
    """The rule, written out for one target."""
    if message_weight >= 0:
        return message_weight
    if role == Role.HISTORY and weights.history is not None:
        return weights.history
    if trained:
        return weights.completion
    own = {Role.SYSTEM: weights.system, Role.TOOL: weights.tool, Role.TEMPLATE: weights.template}.get(Role(role))
    return weights.prompt if own is None else own


def reference(logits, batch, roles, message_weights, weights: LossWeights):
    """``(loss, {role: mean NLL})`` token by token, in float64, independently of plw_plugins."""
    total, weight_sum, count = torch.zeros((), dtype=torch.float64), 0.0, 0
    role_nll: dict[int, list[float]] = {}
    rows, steps = batch.input_ids.shape
    for b in range(rows):
        for t in range(steps - 1):
            label = int(batch.labels[b, t + 1])
            if label == IGNORE_INDEX and int(batch.all_labels[b, t + 1]) == IGNORE_INDEX:
                continue
            target = label if label != IGNORE_INDEX else int(batch.input_ids[b, t + 1])
            weight = reference_weight(weights, label != IGNORE_INDEX, int(roles[b, t + 1]),
                                      float(message_weights[b, t + 1]))
            nll = -torch.log_softmax(logits[b, t].double(), dim=-1)[target]
            total = total + weight * nll
            weight_sum += weight
            count += weight > 0
            role_nll.setdefault(int(roles[b, t + 1]), []).append(float(nll))
    normalizer = count if weights.normalization == "token_count" else weight_sum
    means = {role: sum(values) / len(values) for role, values in role_nll.items()}
    return (total / normalizer if normalizer > 0 else total), means


def masks_of(batch, roles=None, message_weights=None, rows=slice(None)):
    extra = {k: v[rows] for k, v in batch.mask_kwargs().items()}
    return build_loss_masks(batch.input_ids[rows], batch.labels[rows], roles=None if roles is None else roles[rows],
                            message_weights=None if message_weights is None else message_weights[rows], **extra)


@settings(max_examples=60, deadline=None)
@given(batch=batches(vocab=VOCAB), weights=loss_weights(), seed=st.integers(0, 1000),
       with_message_weights=st.booleans())
def test_every_loss_path_equals_the_rule_token_by_token(batch, weights, seed, with_message_weights):
    roles, message_weights = roles_of(batch, seed, with_message_weights)
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*batch.input_ids.shape, HIDDEN, generator=generator, dtype=torch.float64).float()
    head = torch.randn(VOCAB, HIDDEN, generator=generator)
    logits = hidden @ head.T
    masks = masks_of(batch, roles, message_weights)
    expected, role_means = reference(logits, batch, roles, message_weights, weights)

    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, VOCAB), masks.targets.reshape(-1), reduction="none"
    ).reshape(masks.shape)
    results = [
        prompt_weighted_loss(logits, masks, weights),
        prompt_weighted_loss_from_hidden(hidden, head, masks, weights, score_unweighted=True),
        prompt_weighted_loss_from_token_nll(nll, masks, weights),
    ]
    for result in results:
        torch.testing.assert_close(result.loss.double(), expected, atol=1e-5, rtol=1e-5)
    metrics = LossMetrics()
    metrics.add(results[0])
    logged = metrics.pop()
    for role in (Role.SYSTEM, Role.TOOL, Role.TEMPLATE, Role.HISTORY):
        name = f"{role.name.lower()}_loss"
        if role in role_means:
            assert logged[name] == pytest.approx(role_means[role], abs=1e-4)
        else:
            assert name not in logged


@settings(max_examples=40, deadline=None)
@given(batch=batches(vocab=VOCAB), prompt_loss_weight=WEIGHT, seed=st.integers(0, 1000))
def test_roles_without_role_keys_change_nothing_bit_for_bit(batch, prompt_loss_weight, seed):
    roles, message_weights = roles_of(batch, seed, with_message_weights=False)
    hidden = torch.randn(*batch.input_ids.shape, HIDDEN, generator=torch.Generator().manual_seed(seed))
    head = torch.randn(VOCAB, HIDDEN, generator=torch.Generator().manual_seed(seed + 1)).requires_grad_()
    plain = prompt_weighted_loss_from_hidden(hidden, head, masks_of(batch), prompt_loss_weight)
    with_roles = prompt_weighted_loss_from_hidden(hidden, head, masks_of(batch, roles, message_weights),
                                                  LossWeights(prompt=prompt_loss_weight))
    assert torch.equal(plain.loss, with_roles.loss) and torch.equal(plain.weight_sum, with_roles.weight_sum)
    assert torch.equal(torch.autograd.grad(plain.loss, head)[0], torch.autograd.grad(with_roles.loss, head)[0])
    assert plain.role_tokens is None and with_roles.role_tokens is not None


@settings(max_examples=40, deadline=None)
@given(batch=batches(vocab=VOCAB), weights=loss_weights(), seed=st.integers(0, 1000), splits=st.integers(1, 4))
def test_micro_batches_with_the_step_normalizer_sum_to_the_full_batch_gradient(batch, weights, seed, splits):
    roles, message_weights = roles_of(batch, seed, with_message_weights=True)
    generator = torch.Generator().manual_seed(seed)
    head = torch.randn(VOCAB, HIDDEN, generator=generator).requires_grad_()
    hidden = torch.randn(*batch.input_ids.shape, HIDDEN, generator=generator)

    def loss_of(rows, normalizer=None):
        return prompt_weighted_loss_from_hidden(hidden[rows], head, masks_of(batch, roles, message_weights, rows),
                                                weights, normalizer=normalizer)

    (full_grad,) = torch.autograd.grad(loss_of(slice(None)).loss, head)
    groups = [g for g in torch.tensor_split(torch.arange(batch.input_ids.shape[0]), splits) if len(g)]
    parts = [slice(int(g[0]), int(g[-1]) + 1) for g in groups]
    step_total = sum(masks_of(batch, roles, message_weights, rows).weight_sum(weights) for rows in parts)
    split_grad = sum(torch.autograd.grad(loss_of(rows, step_total).loss, head)[0] for rows in parts)
    torch.testing.assert_close(split_grad, full_grad, atol=1e-5, rtol=1e-5)


def test_wit_weights_normalise_by_the_count_of_weighted_tokens():
    """WIT (TRL PR #6747): prompt and completion weights, divided by the number of tokens of weight above 0."""
    input_ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 8, 9, 10]])
    logits = torch.randn(1, 6, VOCAB, generator=torch.Generator().manual_seed(0))
    masks = build_loss_masks(input_ids, labels)
    nll = torch.nn.functional.cross_entropy(logits[0, :-1], input_ids[0, 1:], reduction="none")
    weights = LossWeights(prompt=0.2, completion=0.7, normalization="token_count")
    expected = (0.2 * nll[:2].sum() + 0.7 * nll[2:].sum()) / 5
    torch.testing.assert_close(prompt_weighted_loss(logits, masks, weights).loss, expected)
    assert masks.weight_sum(weights).item() == 5
    assert masks.weight_sum(LossWeights(prompt=0.0, normalization="token_count")).item() == 3


@pytest.mark.parametrize(("key", "value", "message"), [
    ("completion_loss_weight", 0.0, r"completion_loss_weight must be a number in \(0, 1\], got 0.0"),
    ("system_loss_weight", 1.5, r"system_loss_weight must be a number in \[0, 1\], got 1.5"),
    ("tool_loss_weight", float("nan"), "tool_loss_weight must be a number in .*not a number"),
    ("template_loss_weight", "0", r"template_loss_weight must be a number in \[0, 1\], got '0' \(str\)"),
    ("history_loss_weight", True, r"history_loss_weight must be a number in \[0, 1\], got True \(bool\)"),
    ("loss_normalization", "mean", "loss_normalization must be one of 'weight_sum', 'token_count', got 'mean'"),
])
def test_bad_role_keys_name_the_key_and_the_value(key, value, message):
    with pytest.raises(ValueError, match=message):
        PromptLossWeightConfig(**{key: value})


def test_the_config_resolves_every_weight_and_schedules_only_the_prompt():
    config = PromptLossWeightConfig(prompt_loss_weight=0.0, prompt_loss_weight_policy="linear",
                                    prompt_loss_weight_final=0.5, system_loss_weight=0.0, history_loss_weight=0.25,
                                    completion_loss_weight=0.5, loss_normalization="token_count")
    assert config.loss_weights_at(1.0) == LossWeights(prompt=0.5, completion=0.5, system=0.0, history=0.25,
                                                      normalization="token_count")
    assert config.loss_weights_at(0.0).prompt == 0.0
    assert PromptLossWeightConfig(prompt_loss_weight=0.0, history_loss_weight=0.3).largest_weight() == 0.3
