"""The YAML keys go through Axolotl's own config loading (``axolotl.cli.config.load_cfg``, what
``axolotl train`` runs first): kept, defaulted, and bad values stopped with the key named."""

from __future__ import annotations

import pytest

from axolotl_harness import ALPACA, PLUGIN, plugin, write_config

pytestmark = pytest.mark.axolotl


@pytest.fixture
def load(tmp_path, tiny_model_dir, alpaca_jsonl):
    from axolotl.cli.config import load_cfg

    def load(**overrides):
        path = write_config(tmp_path, tiny_model_dir, {**ALPACA, "path": str(alpaca_jsonl)}, overrides)
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
    }


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("prompt_loss_weight", 1.5, "less than or equal to 1"),
        ("prompt_loss_weight", -0.1, "greater than or equal to 0"),
        ("prompt_loss_weight", "abc", "valid number"),
        ("prompt_loss_weight", float("nan"), "prompt_loss_weight"),
        ("prompt_loss_weight_final", 2, "less than or equal to 1"),
        ("prompt_loss_weight_policy", "nope", "not a registered policy"),
    ],
)
def test_bad_values_name_the_key(load, key, value, message):
    overrides = plugin(0.1, prompt_loss_weight_policy="linear", prompt_loss_weight_final=0.0)
    with pytest.raises(ValueError, match=message) as error:
        load(**{**overrides, key: value})
    assert key in str(error.value)


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
