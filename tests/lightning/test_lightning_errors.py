"""Misuse fails loudly, before any step trains at a wrong weight; bad settings name the key and value."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from plw_lightning_testlib import TinyLM, TinyLMWithoutMixin, load_tokenizer, loader, make_batch, parameters, trainer

from plw_plugins.integrations.lightning import PromptLossWeight


@pytest.fixture(scope="module")
def batches(tiny_model_dir):
    return loader([make_batch(load_tokenizer(tiny_model_dir), [0, 4])])


def test_callback_with_a_module_that_never_calls_the_helper_fails_before_the_first_step(tiny_model_dir, batches):
    module = TinyLM(str(tiny_model_dir), mode="plain", learning_rate=1.0)
    before = parameters(module)
    with pytest.raises(RuntimeError, match=r"prompt_weighted_loss did not compute.*return\s+self.prompt_weighted_loss"):
        trainer(max_steps=1, callbacks=[PromptLossWeight()]).fit(module, train_dataloaders=batches)
    assert module.first_gradients is None
    for name, value in parameters(module).items():
        assert torch.equal(value, before[name]), f"{name} was trained"


def test_callback_with_a_module_without_the_mixin_fails_at_setup(tiny_model_dir, batches):
    with pytest.raises(TypeError, match="TinyLMWithoutMixin.*mix PromptLossWeightMixin into the LightningModule"):
        trainer(max_steps=1, callbacks=[PromptLossWeight()]).fit(TinyLMWithoutMixin(str(tiny_model_dir)), train_dataloaders=batches)


def test_mixin_without_the_callback_fails(tiny_model_dir, batches):
    with pytest.raises(RuntimeError, match="the Trainer has no PromptLossWeight callback"):
        trainer(max_steps=1).fit(TinyLM(str(tiny_model_dir)), train_dataloaders=batches)
    with pytest.raises(RuntimeError, match="not attached to a Trainer"):
        TinyLM(str(tiny_model_dir)).training_step(next(iter(batches)), 0)


def test_hidden_states_without_an_lm_head_fail(tiny_model_dir, batches):
    with pytest.raises(ValueError, match="hidden states .*pass lm_head="):
        trainer(max_steps=1, callbacks=[PromptLossWeight()]).fit(
            TinyLM(str(tiny_model_dir), mode="hidden_without_head"), train_dataloaders=batches
        )


def test_schedule_without_a_finite_length_fails_before_training(tiny_model_dir, batches):
    plw = PromptLossWeight(prompt_loss_weight=0.0, prompt_loss_weight_policy="cosine", prompt_loss_weight_final=0.5)
    with pytest.raises(ValueError, match="needs a finite training length"):
        trainer(max_steps=-1, max_epochs=-1, callbacks=[plw]).fit(TinyLM(str(tiny_model_dir)), train_dataloaders=batches)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"prompt_loss_weight": 1.5}, "prompt_loss_weight must be a number in \\[0, 1\\], got 1.5"),
        ({"prompt_loss_weight": -0.1}, "prompt_loss_weight must be a number in \\[0, 1\\], got -0.1"),
        ({"prompt_loss_weight": float("nan")}, "prompt_loss_weight must be a number in \\[0, 1\\], got nan: not a number"),
        ({"prompt_loss_weight": "0.1"}, "prompt_loss_weight must be a number in \\[0, 1\\], got '0.1'"),
        ({"prompt_loss_weight": True}, "prompt_loss_weight must be a number in \\[0, 1\\], got True \\(bool\\)"),
        ({"prompt_loss_weight_policy": True}, "prompt_loss_weight_policy must be the name of a policy, got True"),
        ({"prompt_loss_weight_policy": "linear", "prompt_loss_weight_final": True},
         "prompt_loss_weight_final must be a number in \\[0, 1\\], got True \\(bool\\)"),
        ({"prompt_loss_weight_policy": "linear", "prompt_loss_weight_final": "0.1"},
         "prompt_loss_weight_final must be a number in \\[0, 1\\], got '0.1'"),
        ({"prompt_loss_weight_policy": "linear", "prompt_loss_weight_final": float("nan")},
         "prompt_loss_weight_final must be a number in \\[0, 1\\], got nan: not a number"),
        ({"prompt_loss_weight_policy": "step"}, "prompt_loss_weight_policy='step' is not a registered policy"),
        ({"prompt_loss_weight_policy": "linear"}, "prompt_loss_weight_policy='linear' needs prompt_loss_weight_final"),
        ({"prompt_loss_weight_final": 0.5}, "prompt_loss_weight_final=0.5 has no effect"),
        ({"prompt_loss_weight_policy": "linear", "prompt_loss_weight_final": 2}, "prompt_loss_weight_final must be"),
    ],
)
def test_bad_settings_name_the_key_and_value(settings, message):
    with pytest.raises(ValueError, match=message):
        PromptLossWeight(**settings)


def test_importing_the_core_imports_no_lightning():
    code = "import sys, plw_plugins; print('lightning' in sys.modules, 'pytorch_lightning' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"


def test_every_core_key_is_an_argument_checked_on_its_raw_value():
    """A key added to the core later is a callback argument with the same check, or this fails."""
    import inspect

    from plw_plugins.config import CONFIG_KEYS

    assert tuple(inspect.signature(PromptLossWeight.__init__).parameters)[1:] == CONFIG_KEYS
    for key in CONFIG_KEYS:
        with pytest.raises(ValueError, match=f"^{key} must be .*got True \\(bool\\)"):
            PromptLossWeight(**{key: True})
