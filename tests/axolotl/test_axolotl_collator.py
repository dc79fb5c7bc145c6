"""The per-sample prompt mask through Axolotl's real collators, with a tokenizer whose pad token is
its eos token: padding and the first token of each packed sample get weight 0."""

from __future__ import annotations

import pytest
import torch

from plw_plugins import build_loss_masks_from_batch
from plw_plugins.cli.builtin_data import instruction_rows

pytestmark = pytest.mark.axolotl


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir_pad_is_eos):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir_pad_is_eos)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    return tokenizer


@pytest.fixture(scope="module")
def samples(tokenizer):
    """Tokenised prompt-completion samples as Axolotl's prompt strategies leave them: the prompt
    labelled -100, the completion and its eos labelled with their ids, no padding."""
    samples = []
    for row in instruction_rows(5):
        prompt = tokenizer(row["prompt"])["input_ids"]
        completion = tokenizer(row["completion"])["input_ids"] + [tokenizer.eos_token_id]
        samples.append({
            "input_ids": prompt + completion,
            "attention_mask": [1] * (len(prompt) + len(completion)),
            "labels": [-100] * len(prompt) + completion,
            "position_ids": list(range(len(prompt) + len(completion))),
        })
    return samples


def copies(samples):
    return [{key: None if value is None else list(value) for key, value in sample.items()} for sample in samples]


def within_sample_targets(lengths):
    return sum(length - 1 for length in lengths)


def test_packed_rows_weigh_neither_padding_nor_sample_starts(tokenizer, samples):
    from plw_plugins.integrations.axolotl.collator import PromptMaskV2BatchSamplerDataCollator

    collator = PromptMaskV2BatchSamplerDataCollator(
        tokenizer, padding=True, pad_to_multiple_of=512, return_tensors="pt"
    )
    packs = [copies(samples[:3]), copies(samples[3:])]
    batch = collator(packs)
    del batch["attention_mask"]  # Axolotl drops it for sdpa / eager packing: only position ids are left

    masks = build_loss_masks_from_batch(batch)
    weights = masks.weights(1.0)
    for row, pack in enumerate(packs):
        lengths = [len(sample["input_ids"]) for sample in pack]
        used = sum(lengths)
        assert (batch["input_ids"][row, used:] == tokenizer.eos_token_id).all()  # padding looks like eos
        assert int((weights[row] > 0).sum()) == within_sample_targets(lengths)
        assert (weights[row, used - 1 :] == 0).all()  # no target in the padding
        starts = torch.tensor(lengths).cumsum(0)[:-1]
        assert (weights[row, starts - 1] == 0).all()  # no sample's first token is a target of the previous one

    # Without the mask, the padding's position ids 0, 1, 2... make it look like one more prompt.
    unmasked = build_loss_masks_from_batch({key: value for key, value in batch.items() if key != "prompt_mask"})
    assert unmasked.weight_sum(1.0) > masks.weight_sum(1.0)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_padded_batches_weigh_no_padding(tokenizer, samples, padding_side):
    from plw_plugins.integrations.axolotl.collator import PromptMaskDataCollator

    tokenizer.padding_side = padding_side
    try:
        collator = PromptMaskDataCollator(tokenizer, padding=True, pad_to_multiple_of=64, return_tensors="pt")
        batch = collator(copies(samples))
    finally:
        tokenizer.padding_side = "right"
    without_attention = {key: value for key, value in batch.items() if key != "attention_mask"}
    weights = build_loss_masks_from_batch(without_attention).weights(1.0)
    for row, sample in enumerate(samples):
        assert int((weights[row] > 0).sum()) == within_sample_targets([len(sample["input_ids"])])
    # The mask agrees with the attention mask wherever the latter exists.
    attention = batch["attention_mask"]
    assert torch.equal(batch["prompt_mask"].bool(), attention.bool() & (attention.cumsum(1) > 1))


def test_prompt_mask_narrows_completion_never(tokenizer, samples):
    """Completion targets are exactly Axolotl's labelled ones; the mask only decides the prompt."""
    from plw_plugins.integrations.axolotl.collator import PromptMaskV2BatchSamplerDataCollator

    collator = PromptMaskV2BatchSamplerDataCollator(tokenizer, padding=True, return_tensors="pt")
    batch = collator([copies(samples)])
    masks = build_loss_masks_from_batch(batch)
    assert torch.equal(masks.completion, batch["labels"][:, 1:] != -100)
    assert int(masks.completion.sum()) == sum(sum(label != -100 for label in sample["labels"]) for sample in samples)


@pytest.mark.parametrize(
    ("config", "is_eval", "expected"),
    [
        ({"sample_packing": False}, False, "PromptMaskDataCollator"),
        ({"sample_packing": True, "model_config_type": "llama", "attn_implementation": "sdpa"}, False,
         "PromptMaskV2BatchSamplerDataCollator"),
        ({"sample_packing": True, "eval_sample_packing": False, "model_config_type": "llama"}, True,
         "PromptMaskDataCollator"),
        ({"sample_packing": True, "eval_sample_packing": True, "model_config_type": "gpt2",
          "attn_implementation": "flash_attention_2"}, True, "PromptMaskBatchSamplerDataCollator"),
        ({"sample_packing": False, "batch_flattening": True}, False, None),
    ],
)
def test_plugin_picks_axolotls_collator_with_the_mask(config, is_eval, expected):
    from axolotl.utils.dict import DictDefault

    from plw_plugins.integrations.axolotl import PromptLossWeightPlugin

    choice = PromptLossWeightPlugin().get_collator_cls_and_kwargs(DictDefault(config), is_eval=is_eval)
    assert (None if choice is None else choice[0].__name__) == expected


def with_roles(samples, *, weighted: bool):
    """The samples with a conversation's columns: the first three prompt tokens a system prompt,
    the rest prompt or completion; with ``weighted``, the completion of the second sample at 0.5."""
    from plw_plugins.roles import NO_MESSAGE_WEIGHT, Role

    rows = copies(samples)
    for index, row in enumerate(rows):
        trained = [label != -100 for label in row["labels"]]
        row["plw_roles"] = [int(Role.SYSTEM) if t < 3 else int(Role.COMPLETION if bit else Role.PROMPT)
                            for t, bit in enumerate(trained)]
        row["plw_message_weights"] = [0.5 if weighted and index == 1 and bit else NO_MESSAGE_WEIGHT for bit in trained]
    return rows


@pytest.mark.parametrize("packed", [False, True])
def test_role_columns_are_laid_out_as_the_tokens(tokenizer, samples, packed):
    """Each sample's roles and message weights sit where its tokens sit, padded or packed; padding
    is prompt with no message weight."""
    from plw_plugins.integrations.axolotl.collator import PromptMaskDataCollator, PromptMaskV2BatchSamplerDataCollator
    from plw_plugins.roles import NO_MESSAGE_WEIGHT, Role

    collator_class = PromptMaskV2BatchSamplerDataCollator if packed else PromptMaskDataCollator
    collator = collator_class(tokenizer, padding=True, pad_to_multiple_of=64, return_tensors="pt")
    rows = with_roles(samples, weighted=True)
    batch = collator([copies(rows)] if packed else copies(rows))
    placed = [(0, sum(len(r["input_ids"]) for r in rows[:i])) if packed else (i, 0) for i in range(len(rows))]
    for row, (batch_row, start) in zip(rows, placed):
        end = start + len(row["input_ids"])
        assert batch["input_ids"][batch_row, start:end].tolist() == row["input_ids"]
        assert batch["plw_roles"][batch_row, start:end].tolist() == row["plw_roles"]
        assert batch["plw_message_weights"][batch_row, start:end].tolist() == row["plw_message_weights"]
        if not packed:
            assert (batch["plw_roles"][batch_row, end:] == Role.PROMPT).all()
            assert (batch["plw_message_weights"][batch_row, end:] == NO_MESSAGE_WEIGHT).all()
    assert batch["plw_message_weights"].dtype == torch.float32 and batch["plw_roles"].dtype == torch.long


def test_roles_without_role_keys_weigh_bit_for_bit_as_without_roles(tokenizer, samples):
    """Roles carried for the metrics, no role key set, no message weight: the same per-target
    weights and the same W, bit for bit, as the batch without roles (the message weights, all
    absent, are left out of the batch)."""
    from plw_plugins.integrations.axolotl.collator import PromptMaskV2BatchSamplerDataCollator
    from plw_plugins.roles import LossWeights

    collator = PromptMaskV2BatchSamplerDataCollator(tokenizer, padding=True, return_tensors="pt")
    with_columns = collator([with_roles(samples, weighted=False)])
    without = collator([copies(samples)])
    assert "plw_message_weights" not in with_columns and "plw_roles" in with_columns
    for weight in (0.1, 0.3, LossWeights(prompt=0.7)):
        masks, plain = build_loss_masks_from_batch(with_columns), build_loss_masks_from_batch(without)
        assert torch.equal(masks.weights(weight), plain.weights(weight))
        assert torch.equal(masks.weight_sum(weight), plain.weight_sum(weight))
    # A role key set does change them: the system tokens at 0.
    system_off = LossWeights(prompt=0.3, system=0.0)
    assert masks.weight_sum(system_off) < plain.weight_sum(system_off)


def test_role_columns_follow_truncation_and_other_data_is_prompt(tokenizer, samples):
    """Axolotl's truncation cuts the tokens, not the roles; a row of another dataset type merged
    with chat data (its roles ``None``) is prompt throughout; roles shorter than the tokens stop."""
    from plw_plugins.roles import Role

    from plw_plugins.integrations.axolotl.collator import PromptMaskDataCollator

    collator = PromptMaskDataCollator(tokenizer, padding=True, return_tensors="pt")
    rows = with_roles(samples, weighted=False)
    rows[0]["input_ids"], rows[0]["labels"], rows[0]["attention_mask"] = (
        rows[0]["input_ids"][:5], rows[0]["labels"][:5], rows[0]["attention_mask"][:5],
    )
    del rows[0]["position_ids"]
    for row in rows[1:]:
        del row["position_ids"]
    rows[1]["plw_roles"] = rows[1]["plw_message_weights"] = None
    batch = collator(copies(rows))
    assert batch["plw_roles"][0, :5].tolist() == rows[0]["plw_roles"][:5]
    assert (batch["plw_roles"][1] == Role.PROMPT).all()
    rows[2]["plw_roles"] = rows[2]["plw_roles"][:3]
    with pytest.raises(ValueError, match="has only 3 plw_roles"):
        collator(copies(rows))
