"""The YAML keys go through Axolotl's own config loading (``axolotl.cli.config.load_cfg``, what
``axolotl train`` runs first): kept, defaulted, and bad values stopped with the key named."""

from __future__ import annotations

import json

import pytest
import yaml

from axolotl_harness import ALPACA, LIGER, PLUGIN, plugin, write_config

pytestmark = pytest.mark.axolotl


@pytest.fixture
def load(tmp_path, tiny_model_dir, alpaca_jsonl):
    """Axolotl's own loading of a YAML file (block YAML, as users write it: NaN is ``.nan``)."""
    from axolotl.cli.config import load_cfg

    def load(**overrides):
        path = write_config(tmp_path, tiny_model_dir, {**ALPACA, "path": str(alpaca_jsonl)}, overrides)
        path.write_text(yaml.safe_dump(json.loads(path.read_text())))
        return load_cfg(str(path))

    return load


def test_keys_are_kept_not_dropped(load):
    cfg = load(**plugin(0.25, prompt_loss_weight_policy="linear", prompt_loss_weight_final=0.0))
    keys = (cfg.prompt_loss_weight, cfg.prompt_loss_weight_policy, cfg.prompt_loss_weight_final)
    assert keys == (0.25, "linear", 0.0)


def test_default_weight(load):
    from plw_plugins.config import DEFAULT_PROMPT_LOSS_WEIGHT

    cfg = load(plugins=plugin(0.0)["plugins"])
    assert cfg.prompt_loss_weight == DEFAULT_PROMPT_LOSS_WEIGHT
    assert cfg.prompt_loss_weight_policy == "constant"


def test_the_training_arguments_carry_the_keys(load):
    from axolotl.integrations.base import PluginManager

    cfg = load(**plugin(0.25, prompt_loss_weight_policy="cosine", prompt_loss_weight_final=0.5))
    assert PluginManager.get_instance().get_training_args(cfg) == {
        "prompt_loss_weight": 0.25, "prompt_loss_weight_policy": "cosine", "prompt_loss_weight_final": 0.5,
        "completion_loss_weight": 1.0, "loss_normalization": "weight_sum",  # the defaults of the role keys
        "average_tokens_across_devices": True,  # W summed over ranks (Axolotl turns it off)
    }
    cfg = load(**plugin(0.1, system_loss_weight=0.0, tool_loss_weight=0.5, template_loss_weight=0.0,
                        history_loss_weight=0.25, completion_loss_weight=0.9, loss_normalization="token_count"))
    assert PluginManager.get_instance().get_training_args(cfg) == {
        "prompt_loss_weight": 0.1, "prompt_loss_weight_policy": "constant", "completion_loss_weight": 0.9,
        "system_loss_weight": 0.0, "tool_loss_weight": 0.5, "template_loss_weight": 0.0, "history_loss_weight": 0.25,
        "loss_normalization": "token_count", "average_tokens_across_devices": True,
    }


WEIGHT = "must be a number in \\[0, 1\\], got"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("prompt_loss_weight", 1.5, f" {WEIGHT} 1.5"),
        ("prompt_loss_weight", -0.1, f" {WEIGHT} -0.1"),
        ("prompt_loss_weight", True, f" {WEIGHT} True \\(bool\\)"),
        ("prompt_loss_weight", False, f" {WEIGHT} False \\(bool\\)"),
        ("prompt_loss_weight", "0.1", f" {WEIGHT} '0.1' \\(str\\)"),
        ("prompt_loss_weight", "abc", f" {WEIGHT} 'abc' \\(str\\)"),
        ("prompt_loss_weight", float("nan"), f" {WEIGHT} nan: not a number"),
        ("prompt_loss_weight", None, f" {WEIGHT} None"),
        ("prompt_loss_weight_final", 2, f" {WEIGHT} 2"),
        ("prompt_loss_weight_final", True, f" {WEIGHT} True \\(bool\\)"),
        ("prompt_loss_weight_final", "0", f" {WEIGHT} '0' \\(str\\)"),
        ("prompt_loss_weight_final", float("nan"), f" {WEIGHT} nan: not a number"),
        ("prompt_loss_weight_policy", "nope", "='nope' is not a registered policy"),
        ("prompt_loss_weight_policy", True, " must be the name of a policy, got True \\(bool\\)"),
        ("prompt_loss_weight_policy", 1, " must be the name of a policy, got 1 \\(int\\)"),
    ],
)
def test_bad_values_name_the_key(load, key, value, message):
    """The YAML value as written, checked by the core as in TRL and Lightning: pydantic would turn
    ``true`` into 1.0 and ``"0.1"`` into 0.1."""
    overrides = plugin(0.1, prompt_loss_weight_policy="linear", prompt_loss_weight_final=0.0)
    with pytest.raises(ValueError, match=key + message):
        load(**{**overrides, key: value})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("system_loss_weight", 1.5, f" {WEIGHT} 1.5"),
        ("system_loss_weight", "0", f" {WEIGHT} '0' \\(str\\)"),
        ("tool_loss_weight", -0.5, f" {WEIGHT} -0.5"),
        ("tool_loss_weight", True, f" {WEIGHT} True \\(bool\\)"),
        ("template_loss_weight", float("nan"), f" {WEIGHT} nan: not a number"),
        ("history_loss_weight", 2, f" {WEIGHT} 2"),
        ("completion_loss_weight", 0.0, " must be a number in \\(0, 1\\], got 0.0"),
        ("completion_loss_weight", 1.5, " must be a number in \\[0, 1\\], got 1.5"),
        ("loss_normalization", "mean", " must be one of 'weight_sum', 'token_count', got 'mean'"),
        ("loss_normalization", 1, " must be one of 'weight_sum', 'token_count', got 1 \\(int\\)"),
    ],
)
def test_bad_role_keys_name_the_key(load, key, value, message):
    """The role and normalisation keys stop at Axolotl's config check, naming the key and the value."""
    with pytest.raises(ValueError, match=key + message):
        load(**plugin(0.1, **{key: value}))


def test_every_core_key_is_declared_and_checked_on_its_raw_value():
    """A key added to the core later is a YAML key with the same raw check, or this fails."""
    from plw_plugins.config import CONFIG_KEYS
    from plw_plugins.integrations.axolotl.args import PromptLossWeightArgs

    assert tuple(PromptLossWeightArgs.model_fields) == CONFIG_KEYS
    for key in CONFIG_KEYS:
        with pytest.raises(ValueError, match=f"{key} must be"):
            PromptLossWeightArgs(**{key: True})


def test_schedule_keys_must_fit_the_policy(load):
    with pytest.raises(ValueError, match="prompt_loss_weight_final=0.5 has no effect"):
        load(**plugin(0.1, prompt_loss_weight_final=0.5))
    with pytest.raises(ValueError, match="'linear' needs prompt_loss_weight_final"):
        load(**plugin(0.1, prompt_loss_weight_policy="linear"))


def test_train_on_inputs_is_refused_with_the_reason(load):
    with pytest.raises(ValueError, match="train_on_inputs: true cannot be combined") as error:
        load(**plugin(0.1), train_on_inputs=True)
    assert "prompt_loss_weight: 1.0" in str(error.value)


def test_plugin_is_importable_without_axolotl_at_package_import():
    """``import plw_plugins.integrations.axolotl`` loads no Axolotl module: the plugin class is lazy."""
    import subprocess
    import sys

    code = (
        "import sys, plw_plugins.integrations.axolotl, plw_plugins.integrations.axolotl.args\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'axolotl'], 'axolotl was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["llama3_8b_lora.yml", "tiny_offline.yml"])
def test_examples_pass_axolotls_validation(name):
    """The example YAMLs are valid Axolotl configs with the plugin's keys (the tiny one also runs,
    see the README; the 8B one needs the hub and a GPU)."""
    from pathlib import Path

    import yaml
    from axolotl.cli.config import prepare_plugins
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    path = Path(__file__).resolve().parents[2] / "examples" / "axolotl" / name
    cfg = DictDefault(yaml.safe_load(path.read_text()))
    prepare_plugins(cfg)
    validated = validate_config(cfg)
    assert validated.plugins == [PLUGIN]
    assert validated.prompt_loss_weight == 0.1
    assert not validated.train_on_inputs


@pytest.mark.parametrize(
    ("settings", "named", "reason"),
    [
        ({"use_eaft": True}, "use_eaft", "Entropy-Aware Focal Training"),
        ({"use_eaft": True, "eaft_alpha": 0.5, "eaft_k": 10}, "use_eaft", "not defined"),
        ({"plugins": [PLUGIN, LIGER], "liger_use_token_scaling": True}, "liger_use_token_scaling", "predicted probability"),
        ({"plugins": [PLUGIN, "axolotl.integrations.kd.KDPlugin"], "kd_trainer": True}, "kd_trainer", "teacher"),
        ({"trainer_cls": "axolotl.core.trainers.base.AxolotlTrainer"}, "trainer_cls", "plugin supplies the trainer"),
        ({"plugins": [PLUGIN, "axolotl.integrations.diffusion.DiffusionPlugin"]}, "DiffusionPlugin", "masked-diffusion"),
        ({"rl": "dpo"}, "rl", "supervised fine-tuning only"),
        ({"reward_model": True}, "reward_model", "pairwise"),
        ({"process_reward_model": True}, "process_reward_model", "token classifier"),
    ],
)
def test_settings_that_change_the_objective_are_refused_naming_them(load, settings, named, reason):
    """Each would otherwise be dropped without a word: the plugin's trainer computes the loss."""
    with pytest.raises(ValueError, match="cannot be combined with the prompt loss weight plugin") as error:
        load(**{**plugin(0.1), **settings})
    assert named in str(error.value) and reason in str(error.value)


def test_settings_that_change_nothing_when_off_are_accepted(load):
    cfg = load(**plugin(0.1), use_eaft=False, chunked_cross_entropy=False)
    assert cfg.prompt_loss_weight == 0.1


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"plugins": [PLUGIN, LIGER], "liger_fused_linear_cross_entropy": True}, "liger_fused_linear_cross_entropy"),
        ({"plugins": [PLUGIN, LIGER], "liger_cross_entropy": True}, "liger_cross_entropy"),
        ({"chunked_cross_entropy": True}, "chunked_cross_entropy"),
        ({"flash_attn_cross_entropy": True}, "flash_attn_cross_entropy"),
    ],
)
def test_fused_loss_settings_load_with_a_warning_naming_them(load, settings, named):
    """Memory and speed only: the objective is the plugin's; the warning is what start-up logs."""
    from plw_plugins.integrations.axolotl.host_settings import memory_only_warnings

    cfg = load(**{**plugin(0.1), **settings})
    (warning,) = memory_only_warnings(cfg)
    assert warning.startswith(f"{named}: ") and "objective is unchanged" in warning
    assert memory_only_warnings(load(**plugin(0.1))) == []


def test_cut_cross_entropy_is_on_by_default_once_its_plugin_is_listed():
    """Its key defaults to true in its plugin's schema (the plugin itself needs the cut_cross_entropy package)."""
    from plw_plugins.integrations.axolotl.host_settings import CUT_CROSS_ENTROPY, memory_only_warnings

    (warning,) = memory_only_warnings({"plugins": [PLUGIN, CUT_CROSS_ENTROPY]})
    assert warning.startswith("cut_cross_entropy: Cut Cross-Entropy's fused loss")
    assert memory_only_warnings({"plugins": [PLUGIN, CUT_CROSS_ENTROPY], "cut_cross_entropy": False}) == []
    assert memory_only_warnings({"plugins": [PLUGIN], "cut_cross_entropy": True}) == []
