import math

import pytest
import torch

from plw_plugins import build_loss_masks, prompt_weighted_loss, prompt_weighted_loss_from_hidden, \
    validate_prompt_loss_weight


@pytest.mark.parametrize("value", [0, 1, 0.0, 0.01, 0.5, 1.0])
def test_weights_in_range_are_accepted_as_floats(value):
    assert validate_prompt_loss_weight(value) == float(value)
    assert isinstance(validate_prompt_loss_weight(value), float)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(1.5, "1.5"), (-0.1, "-0.1"), (math.nan, "nan"), (math.inf, "inf"), (True, "True"), ("0.1", "'0.1'"),
     (None, "None"), ([0.1], r"\[0.1\]")],
)
def test_bad_weights_raise_naming_the_key_and_the_value(value, shown):
    with pytest.raises(ValueError, match=rf"prompt_loss_weight must be a number in \[0, 1\], got {shown}"):
        validate_prompt_loss_weight(value)


def _masks():
    return build_loss_masks(torch.tensor([[1, 2, 3, 4]]), torch.tensor([[-100, -100, 3, 4]]))


def test_the_loss_functions_validate_the_weight():
    with pytest.raises(ValueError, match="prompt_loss_weight"):
        prompt_weighted_loss(torch.randn(1, 4, 10), _masks(), 2.0)
    with pytest.raises(ValueError, match="prompt_loss_weight"):
        prompt_weighted_loss_from_hidden(torch.randn(1, 4, 3), torch.randn(10, 3), _masks(), float("nan"))


def test_logits_of_the_wrong_shape_are_named():
    with pytest.raises(ValueError, match=r"logits must have shape .* got shape \(1, 3, 10\)"):
        prompt_weighted_loss(torch.randn(1, 3, 10), _masks(), 0.1)


def test_hidden_states_and_lm_head_of_the_wrong_shape_are_named():
    with pytest.raises(ValueError, match=r"hidden_states must have shape .* got shape \(2, 4, 3\)"):
        prompt_weighted_loss_from_hidden(torch.randn(2, 4, 3), torch.randn(10, 3), _masks(), 0.1)
    with pytest.raises(ValueError, match=r"lm_head_weight must have shape \[vocab, 3\] .* got shape \(10, 5\)"):
        prompt_weighted_loss_from_hidden(torch.randn(1, 4, 3), torch.randn(10, 5), _masks(), 0.1)
    with pytest.raises(ValueError, match=r"lm_head_bias must have shape \[10\], got shape \(9,\)"):
        prompt_weighted_loss_from_hidden(torch.randn(1, 4, 3), torch.randn(10, 3), _masks(), 0.1,
                                         lm_head_bias=torch.randn(9))


def test_target_ids_outside_the_vocabulary_are_named():
    masks = build_loss_masks(torch.tensor([[1, 2, 12, 4]]), torch.tensor([[-100, -100, 12, 4]]))
    with pytest.raises(ValueError, match="target token id 12 is outside the vocabulary of size 10"):
        prompt_weighted_loss(torch.randn(1, 4, 10), masks, 0.1)
    with pytest.raises(ValueError, match="target token id 12 is outside the vocabulary of size 10"):
        prompt_weighted_loss_from_hidden(torch.randn(1, 4, 3), torch.randn(10, 3), masks, 0.1)


@pytest.mark.parametrize("normalizer", [-1.0, "4", True])
def test_bad_normalizers_are_named(normalizer):
    with pytest.raises(ValueError, match="normalizer must be a non-negative number"):
        prompt_weighted_loss(torch.randn(1, 4, 10), _masks(), 0.1, normalizer=normalizer)


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, True])
def test_bad_chunk_sizes_are_named(chunk_size):
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        prompt_weighted_loss_from_hidden(torch.randn(1, 4, 3), torch.randn(10, 3), _masks(), 0.1,
                                         chunk_size=chunk_size)


def test_every_config_key_has_a_check_of_its_raw_value():
    """What every adapter runs on the value a user wrote; a key added to the config without a check
    makes every ``PromptLossWeightConfig`` fail."""
    from plw_plugins.config import CONFIG_KEYS, KEY_CHECKS, validate_config_value

    assert set(KEY_CHECKS) == set(CONFIG_KEYS)
    for key in CONFIG_KEYS:
        with pytest.raises(ValueError, match=f"^{key} must be .*got True \\(bool\\)"):
            validate_config_value(key, True)
    with pytest.raises(KeyError, match="'prompt_loss' is not a prompt loss weight key"):
        validate_config_value("prompt_loss", 0.1)
