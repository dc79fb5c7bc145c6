"""Chat batches with roles and per-message weights (``tokenize_conversation`` + ``collate_conversations``)
through the real Lightning ``Trainer``: the first step's loss and gradients against a hand computation
from the token roles, bit-for-bit today's result with every role key unset, gradient accumulation,
role metrics in fit and validate, and the keys from LightningCLI and in checkpoints.

The hand computation is the rule of issue 10, written here from scratch: a plain forward, the NLL of
every next token, each target's weight from its role, label and message weight, ``sum w * nll / W``.
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LightningCLI
from plw_lightning_testlib import (
    ROLE_KEYS,
    TRAINER_DEFAULTS,
    TinyLM,
    assert_gradients_close,
    gradients,
    load_model,
    load_tokenizer,
    loader,
    make_chat_batch,
    parameters,
    rows_of,
    trainer,
)
from test_lightning_ddp import run_two_ranks

from plw_plugins import IGNORE_INDEX, Role
from plw_plugins.integrations.lightning import PromptLossWeight
from plw_plugins.roles import MESSAGE_WEIGHTS_KEY, ROLES_KEY

TOLERANCE = dict(rtol=1e-4, atol=1e-6)
CASES = {
    "message weights only": dict(prompt_loss_weight=0.1),
    "system 0": dict(prompt_loss_weight=0.1, system_loss_weight=0.0),
    "template 0": dict(prompt_loss_weight=0.1, template_loss_weight=0.0),
    "history 0": dict(prompt_loss_weight=0.1, history_loss_weight=0.0),
    "token count": dict(prompt_loss_weight=0.1, completion_loss_weight=0.5, loss_normalization="token_count"),
    "every key": ROLE_KEYS,
}


@pytest.fixture(scope="module")
def chat_batch(tiny_model_dir) -> dict[str, torch.Tensor]:
    return make_chat_batch(load_tokenizer(tiny_model_dir))


def without_roles(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in batch.items() if key not in (ROLES_KEY, MESSAGE_WEIGHTS_KEY)}


def hand_weight(role: int, trained: bool, message_weight: float, keys: dict) -> float:
    """The weight of one real target, by the rule of issue 10."""
    if message_weight >= 0:
        return message_weight
    if role == Role.HISTORY and keys.get("history_loss_weight") is not None:
        return keys["history_loss_weight"]
    if trained:
        return keys.get("completion_loss_weight", 1.0)
    for code, key in ((Role.SYSTEM, "system_loss_weight"), (Role.TOOL, "tool_loss_weight"), (Role.TEMPLATE, "template_loss_weight")):
        if role == code and keys.get(key) is not None:
            return keys[key]
    return keys["prompt_loss_weight"]


def hand_weights(batch: dict[str, torch.Tensor], keys: dict) -> torch.Tensor:
    """``[B, T - 1]`` weights of the next-token targets; 0 on padding."""
    weights = torch.zeros(batch["input_ids"][:, 1:].shape)
    for b in range(weights.shape[0]):
        for t in range(weights.shape[1]):
            if batch["attention_mask"][b, t + 1]:
                weights[b, t] = hand_weight(
                    int(batch[ROLES_KEY][b, t + 1]), bool(batch["labels"][b, t + 1] != IGNORE_INDEX),
                    float(batch[MESSAGE_WEIGHTS_KEY][b, t + 1]), keys,
                )
    return weights


def token_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[B, T - 1]`` NLL of each next input token, from a plain forward pass."""
    trained = batch["labels"] != IGNORE_INDEX
    assert torch.equal(batch["labels"][trained], batch["input_ids"][trained]), "trained labels are the tokens themselves"
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")


def hand_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], keys: dict) -> torch.Tensor:
    weights = hand_weights(batch, keys)
    total = (weights > 0).sum() if keys.get("loss_normalization") == "token_count" else weights.sum()
    return (weights * token_nll(model, batch)).sum() / total


def hand_metrics(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean NLL per class and role over every real target of ``batches``."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    with torch.no_grad():
        for batch in batches:
            nll = token_nll(model, batch)
            real = batch["attention_mask"][:, 1:].bool()
            trained = batch["labels"][:, 1:] != IGNORE_INDEX
            roles = batch[ROLES_KEY][:, 1:]
            classes = {"prompt_loss": real & ~trained, "completion_loss": trained}
            for role in (Role.SYSTEM, Role.TOOL, Role.TEMPLATE, Role.HISTORY):
                classes[f"{role.name.lower()}_loss"] = real & (roles == role)
            for name, mask in classes.items():
                sums[name] = sums.get(name, 0.0) + float(nll[mask].sum())
                counts[name] = counts.get(name, 0) + int(mask.sum())
    assert all(counts.values()), counts
    return {name: sums[name] / counts[name] for name in sums}


def first_step(model_dir, batches, keys, learning_rate=0.0, mode="output", **trainer_args):
    module = TinyLM(str(model_dir), mode=mode, learning_rate=learning_rate)
    fitted = trainer(max_epochs=1, callbacks=[PromptLossWeight(**keys)], **trainer_args)
    fitted.fit(module, train_dataloaders=loader(batches))
    return module, fitted


def test_the_batch_has_every_role(chat_batch):
    real = chat_batch["attention_mask"].bool()
    assert set(chat_batch[ROLES_KEY][real].tolist()) == set(map(int, Role))
    assert set(chat_batch[MESSAGE_WEIGHTS_KEY][real].tolist()) == {-1.0, 0.0, 0.25, 0.5, 1.0}


@pytest.mark.parametrize("mode", ["output", "lean"])
def test_role_keys_unset_give_todays_gradients_bit_for_bit(tiny_model_dir, chat_batch, mode):
    """Rows without message weights: the role keys in the batch change nothing while no role key is set."""
    batch = rows_of(chat_batch, slice(0, 2))
    with_roles, _ = first_step(tiny_model_dir, [batch], dict(prompt_loss_weight=0.1), mode=mode)
    plain, _ = first_step(tiny_model_dir, [without_roles(batch)], dict(prompt_loss_weight=0.1), mode=mode)
    assert with_roles.step_losses == plain.step_losses
    for name, gradient in plain.first_gradients.items():
        assert torch.equal(with_roles.first_gradients[name], gradient), name


@pytest.mark.parametrize("case", list(CASES))
def test_first_step_equals_the_hand_computation(tiny_model_dir, chat_batch, case):
    keys = CASES[case]
    module, _ = first_step(tiny_model_dir, [chat_batch], keys)
    reference = load_model(tiny_model_dir)
    expected = hand_loss(reference, chat_batch, keys)
    assert module.step_losses[0] == pytest.approx(float(expected.detach()), rel=1e-5)
    assert_gradients_close(module.first_gradients, gradients(reference, expected), **TOLERANCE)
    # The keys change the loss: today's weights (no role key) give another one.
    today = hand_loss(reference, chat_batch, dict(prompt_loss_weight=keys["prompt_loss_weight"]))
    if case != "message weights only":
        assert abs(float(today.detach()) - float(expected.detach())) > 1e-4


@pytest.mark.parametrize("case", ["every key", "history 0"])
def test_accumulated_step_equals_one_batch(tiny_model_dir, chat_batch, case):
    keys = CASES[case]
    micro_batches = [rows_of(chat_batch, slice(0, 2)), rows_of(chat_batch, slice(2, 3))]
    accumulated, _ = first_step(tiny_model_dir, micro_batches, keys, learning_rate=1.0, accumulate_grad_batches=2)
    single, _ = first_step(tiny_model_dir, [chat_batch], keys, learning_rate=1.0)
    assert_gradients_close(accumulated.first_gradients, single.first_gradients, **TOLERANCE)
    assert_gradients_close(parameters(accumulated), parameters(single), rtol=0.0, atol=1e-6)
    reference = load_model(tiny_model_dir)
    assert_gradients_close(single.first_gradients, gradients(reference, hand_loss(reference, chat_batch, keys)), **TOLERANCE)


@pytest.mark.slow
def test_two_ddp_ranks_equal_one_batch(tiny_model_dir, chat_batch, tmp_path):
    """Rows 0-1 on rank 0, row 2 on rank 1, every role key set and W a token count: the gradient of
    one process on all three rows, and the hand computation's."""
    ddp = run_two_ranks(tiny_model_dir, tmp_path / "ddp_roles.pt", "roles")
    single, _ = first_step(tiny_model_dir, [chat_batch], ROLE_KEYS)
    assert_gradients_close(ddp["gradients"], single.first_gradients, **TOLERANCE)
    reference = load_model(tiny_model_dir)
    assert_gradients_close(single.first_gradients, gradients(reference, hand_loss(reference, chat_batch, ROLE_KEYS)), **TOLERANCE)


def test_role_metrics_in_fit_and_validate(tiny_model_dir, chat_batch):
    keys = CASES["system 0"]
    expected = hand_metrics(load_model(tiny_model_dir), [chat_batch])
    _, fitted = first_step(tiny_model_dir, [chat_batch], keys)
    for name, value in expected.items():
        assert float(fitted.logged_metrics[f"train/{name}"]) == pytest.approx(value, rel=1e-5), name

    # Two validation dataloaders: one set of metrics each, under Lightning's suffix.
    first, second = [chat_batch], [rows_of(chat_batch, slice(0, 1)), rows_of(chat_batch, slice(2, 3))]
    run = trainer(callbacks=[PromptLossWeight(**keys)])
    results = run.validate(TinyLMTwoLoaders(str(tiny_model_dir)), dataloaders=[loader(first), loader(second)], verbose=False)
    for index, batches in enumerate((first, second)):
        means = hand_metrics(load_model(tiny_model_dir), batches)
        for name, value in means.items():
            assert results[index][f"val/{name}/dataloader_idx_{index}"] == pytest.approx(value, rel=1e-5), (index, name)

    # Batches without roles log no role metric.
    (plain,) = trainer(callbacks=[PromptLossWeight(**keys)]).validate(
        TinyLM(str(tiny_model_dir)), dataloaders=loader([without_roles(chat_batch)]), verbose=False
    )
    assert sorted(plain) == ["val/completion_loss", "val/prompt_loss"]


class TinyLMTwoLoaders(TinyLM):
    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        return self._loss(batch)


@pytest.fixture
def no_pytest_argv(monkeypatch):
    """LightningCLI warns when it gets ``args`` beside a command line: hide pytest's."""
    monkeypatch.setattr(sys, "argv", ["cli"])


QUIET = [f"--trainer.{key}={value}" for key, value in TRAINER_DEFAULTS.items()]


def test_lightning_cli_takes_the_role_keys(tiny_model_dir, no_pytest_argv):
    cli = LightningCLI(
        TinyLM, save_config_callback=None, run=False,
        args=[
            f"--model.model_dir={tiny_model_dir}", *QUIET, "--trainer.callbacks+=PromptLossWeight",
            "--trainer.callbacks.system_loss_weight=0", "--trainer.callbacks.history_loss_weight=0.5",
            "--trainer.callbacks.completion_loss_weight=0.5", "--trainer.callbacks.loss_normalization=token_count",
        ],
    )
    [plw] = [c for c in cli.trainer.callbacks if isinstance(c, PromptLossWeight)]
    assert (plw.config.system_loss_weight, plw.config.history_loss_weight) == (0.0, 0.5)
    assert (plw.config.completion_loss_weight, plw.config.loss_normalization) == (0.5, "token_count")
    assert plw.config.tool_loss_weight is None and plw.config.template_loss_weight is None


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("system_loss_weight=1.5", r"system_loss_weight must be a number in \[0, 1\], got 1.5"),
        ("completion_loss_weight=0", r"completion_loss_weight must be a number in \(0, 1\], got 0"),
        ("loss_normalization=tokens", r"loss_normalization must be one of 'weight_sum', 'token_count', got 'tokens'"),
    ],
)
def test_lightning_cli_rejects_a_bad_role_key(tiny_model_dir, no_pytest_argv, flag, message):
    with pytest.raises(ValueError, match=message):
        LightningCLI(
            TinyLM, save_config_callback=None, run=False,
            args=[f"--model.model_dir={tiny_model_dir}", *QUIET, "--trainer.callbacks+=PromptLossWeight",
                  f"--trainer.callbacks.{flag}"],
        )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tool_loss_weight", True, r"tool_loss_weight must be a number in \[0, 1\], got True"),
        ("template_loss_weight", "0.1", r"template_loss_weight must be a number in \[0, 1\], got '0.1'"),
        ("history_loss_weight", float("nan"), r"history_loss_weight must be a number in \[0, 1\], got nan"),
        ("completion_loss_weight", 0.0, r"completion_loss_weight must be a number in \(0, 1\]"),
        ("loss_normalization", None, r"loss_normalization must be one of"),
    ],
)
def test_the_callback_checks_the_raw_value(key, value, message):
    with pytest.raises(ValueError, match=message):
        PromptLossWeight(**{key: value})


def test_checkpoint_state_holds_the_role_keys():
    keys = CASES["every key"]
    saved = PromptLossWeight(**keys).state_dict()
    assert {key: saved["config"][key] for key in keys} == keys
    with pytest.warns(UserWarning, match="resuming with"):
        PromptLossWeight(**{**keys, "system_loss_weight": 0.5}).load_state_dict(saved)
    # A checkpoint from before the role keys existed resumes without a warning under their defaults.
    old = {"progress": 0.0, "prompt_loss_weight": 0.1, "config": {
        "prompt_loss_weight": 0.1, "prompt_loss_weight_policy": "constant", "prompt_loss_weight_final": None}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PromptLossWeight(prompt_loss_weight=0.1).load_state_dict(old)
    with pytest.warns(UserWarning, match="resuming with"):
        PromptLossWeight(prompt_loss_weight=0.1, system_loss_weight=0.0).load_state_dict(old)
