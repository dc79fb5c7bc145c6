import pytest
import torch

from plw_plugins import IGNORE_INDEX, build_loss_masks, build_loss_masks_from_batch
from plw_plugins.masks import row_has_weighted_prompt

X = IGNORE_INDEX


def test_right_padding_is_neither_prompt_nor_completion():
    input_ids = torch.tensor([[5, 6, 7, 8, 0, 0]])
    labels = torch.tensor([[X, X, 7, 8, X, X]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    masks = build_loss_masks(input_ids, labels, attention_mask=attention_mask)
    assert masks.prompt.tolist() == [[True, False, False, False, False]]
    assert masks.completion.tolist() == [[False, True, True, False, False]]
    assert masks.targets.tolist() == [[6, 7, 8, 0, 0]]


def test_packed_sequence_starts_are_never_targets():
    input_ids = torch.tensor([[5, 6, 7, 9, 10, 11]])
    labels = torch.tensor([[X, X, 7, X, X, 11]])
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 2]])
    masks = build_loss_masks(input_ids, labels, position_ids=position_ids)
    assert masks.prompt.tolist() == [[True, False, False, True, False]]
    assert masks.completion.tolist() == [[False, True, False, False, True]]


def test_segment_numbered_attention_mask_starts_a_sequence_at_each_new_number():
    input_ids = torch.tensor([[5, 6, 7, 9, 10, 0]])
    labels = torch.full_like(input_ids, X)
    attention_mask = torch.tensor([[1, 1, 1, 2, 2, 0]])
    masks = build_loss_masks(input_ids, labels, attention_mask=attention_mask)
    assert masks.prompt.tolist() == [[True, True, False, True, False]]


def test_left_padding_keeps_the_first_real_token_as_a_target_like_the_frameworks_labels():
    input_ids = torch.tensor([[0, 0, 5, 6]])
    labels = torch.full_like(input_ids, X)
    masks = build_loss_masks(input_ids, labels, attention_mask=torch.tensor([[0, 0, 1, 1]]))
    assert masks.prompt.tolist() == [[False, True, True]]


def test_prompt_mask_narrows_the_prompt_and_never_widens_it():
    input_ids = torch.tensor([[5, 6, 7, 8]])
    labels = torch.tensor([[X, X, X, 8]])
    narrowed = build_loss_masks(input_ids, labels, prompt_mask=torch.tensor([[1, 1, 0, 1]]))
    assert narrowed.prompt.tolist() == [[True, False, False]]
    assert narrowed.completion.tolist() == [[False, False, True]]


def test_weights_and_weight_sum():
    masks = build_loss_masks(torch.tensor([[1, 2, 3, 4]]), torch.tensor([[X, X, 3, 4]]))
    assert masks.weights(0.25).tolist() == [[0.25, 1.0, 1.0]]
    assert masks.weight_sum(0.25).item() == pytest.approx(2.25)


def test_from_batch_reads_the_optional_keys_and_names_missing_ones():
    batch = {"input_ids": torch.tensor([[1, 2, 3]]), "labels": torch.tensor([[X, X, 3]]),
             "attention_mask": torch.tensor([[1, 1, 1]]), "position_ids": None}
    assert build_loss_masks_from_batch(batch).prompt.tolist() == [[True, False]]
    with pytest.raises(ValueError, match="labels"):
        build_loss_masks_from_batch({"input_ids": torch.tensor([[1, 2]])})


@pytest.mark.parametrize("name", ["labels", "attention_mask", "position_ids", "prompt_mask"])
def test_shape_mismatch_names_the_argument(name):
    input_ids = torch.ones(2, 5, dtype=torch.long)
    kwargs = {"labels": input_ids.clone()}
    kwargs[name] = torch.ones(2, 4, dtype=torch.long)
    labels = kwargs.pop("labels")
    with pytest.raises(ValueError, match=rf"{name} has shape \(2, 4\) but input_ids has shape \(2, 5\)"):
        build_loss_masks(input_ids, labels, **kwargs)


def test_one_dimensional_ids_are_rejected_with_their_shape():
    with pytest.raises(ValueError, match=r"input_ids must have shape \[batch, tokens\], got shape \(5,\)"):
        build_loss_masks(torch.ones(5, dtype=torch.long), torch.ones(5, dtype=torch.long))


def test_a_row_has_a_weighted_prompt_target_only_after_its_first_token_and_above_weight_0():
    prompt_only = [IGNORE_INDEX] * 4
    assert row_has_weighted_prompt(prompt_only, 0.1)
    assert not row_has_weighted_prompt(prompt_only, 0.0)
    assert not row_has_weighted_prompt([IGNORE_INDEX], 1.0)  # a single token is never a target
    assert not row_has_weighted_prompt([IGNORE_INDEX, 5, 6], 1.0)  # its only masked token is the first
    assert row_has_weighted_prompt([7, IGNORE_INDEX, 6], 0.5)


def test_roles_without_role_weights_weigh_bit_for_bit_as_without_roles():
    """Roles present but no role weight set: the weights and W are computed as before roles existed
    (a float sum of many 0.1s differs from 0.1 times their count in the last bits)."""
    from plw_plugins.roles import LossWeights, Role

    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, 50, (4, 999), generator=generator)
    labels = torch.where(torch.rand(4, 999, generator=generator) < 0.2, input_ids, X)
    roles = torch.randint(0, len(Role), (4, 999), generator=generator)
    plain = build_loss_masks(input_ids, labels)
    with_roles = build_loss_masks(input_ids, labels, roles=roles)
    for weights in (0.1, LossWeights(prompt=0.1), LossWeights(prompt=0.3, normalization="token_count")):
        assert torch.equal(with_roles.weights(weights), plain.weights(weights))
        assert torch.equal(with_roles.weight_sum(weights), plain.weight_sum(weights))
    role_weighted = LossWeights(prompt=0.1, system=0.0)
    assert not torch.equal(with_roles.weights(role_weighted), plain.weights(role_weighted))
