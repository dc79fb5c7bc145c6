"""PLWSFTConfig: defaults, validation at construction, to_dict() and TrlParser round trips."""

from __future__ import annotations

import pytest
import yaml
from trl import ModelConfig, ScriptArguments, TrlParser

from plw_plugins import DEFAULT_PROMPT_LOSS_WEIGHT
from plw_plugins.integrations.trl import PLWSFTConfig


def make(tmp_path, **kwargs):
    return PLWSFTConfig(output_dir=str(tmp_path), report_to=[], bf16=False, use_cpu=True, **kwargs)


def test_defaults(tmp_path):
    args = make(tmp_path)
    assert args.prompt_loss_weight == DEFAULT_PROMPT_LOSS_WEIGHT == 0.1
    assert args.prompt_loss_weight_policy == "constant"
    assert args.prompt_loss_weight_final is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt_loss_weight": 1.5}, "prompt_loss_weight must be a number in \\[0, 1\\], got 1.5"),
        ({"prompt_loss_weight": -0.1}, "prompt_loss_weight must be a number in \\[0, 1\\], got -0.1"),
        ({"prompt_loss_weight": "a lot"}, "prompt_loss_weight must be a number"),
        ({"prompt_loss_weight": "0.1"}, "prompt_loss_weight must be a number in \\[0, 1\\], got '0.1' \\(str\\)"),
        ({"prompt_loss_weight": True}, "prompt_loss_weight must be a number in \\[0, 1\\], got True \\(bool\\)"),
        ({"prompt_loss_weight": float("nan")}, "prompt_loss_weight must be a number in \\[0, 1\\], got nan: not a number"),
        ({"prompt_loss_weight_policy": True}, "prompt_loss_weight_policy must be the name of a policy, got True"),
        ({"prompt_loss_weight_policy": "linear", "prompt_loss_weight_final": True},
         "prompt_loss_weight_final must be a number in \\[0, 1\\], got True \\(bool\\)"),
        ({"prompt_loss_weight_policy": "linear", "prompt_loss_weight_final": "0"},
         "prompt_loss_weight_final must be a number in \\[0, 1\\], got '0' \\(str\\)"),
        ({"prompt_loss_weight_policy": "zigzag"}, "prompt_loss_weight_policy='zigzag' is not a registered policy"),
        ({"prompt_loss_weight_final": 0.2}, "prompt_loss_weight_final=0.2 has no effect"),
        ({"prompt_loss_weight_policy": "linear", "prompt_loss_weight_final": 2.0}, "prompt_loss_weight_final must be"),
    ],
)
def test_bad_values_raise_at_construction(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(tmp_path, **kwargs)


def test_to_dict_round_trip(tmp_path):
    args = make(tmp_path, prompt_loss_weight=0.25, prompt_loss_weight_policy="linear", prompt_loss_weight_final=0.05)
    values = args.to_dict()
    assert (values["prompt_loss_weight"], values["prompt_loss_weight_policy"], values["prompt_loss_weight_final"]) == (
        0.25, "linear", 0.05,
    )
    parser = TrlParser(PLWSFTConfig)
    (again,) = parser.parse_dict({k: v for k, v in values.items() if k in {f for f in PLWSFTConfig.__dataclass_fields__}})
    assert (again.prompt_loss_weight, again.prompt_loss_weight_policy, again.prompt_loss_weight_final) == (0.25, "linear", 0.05)


def test_trl_parser_yaml_and_flags(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "out"), "model_name_or_path": "m", "dataset_name": "d",
        "prompt_loss_weight": 0.05, "prompt_loss_weight_policy": "cosine", "prompt_loss_weight_final": 0.5,
        "use_cpu": True, "bf16": False,
    }))
    parser = TrlParser((ScriptArguments, PLWSFTConfig, ModelConfig))
    _, from_yaml, _ = parser.parse_args_and_config(args=["--config", str(config)])
    assert (from_yaml.prompt_loss_weight, from_yaml.prompt_loss_weight_policy, from_yaml.prompt_loss_weight_final) == (
        0.05, "cosine", 0.5,
    )
    _, overridden, _ = parser.parse_args_and_config(args=["--config", str(config), "--prompt_loss_weight", "0.1"])
    assert overridden.prompt_loss_weight == 0.1
    _, from_flags, _ = TrlParser((ScriptArguments, PLWSFTConfig, ModelConfig)).parse_args_and_config(
        args=["--output_dir", str(tmp_path), "--prompt_loss_weight", "0.3", "--use_cpu", "--bf16", "false"]
    )
    assert from_flags.prompt_loss_weight == 0.3
    with pytest.raises(ValueError, match="prompt_loss_weight must be a number in \\[0, 1\\], got 3.0"):
        TrlParser(PLWSFTConfig).parse_args_and_config(
            args=["--output_dir", str(tmp_path), "--prompt_loss_weight", "3", "--use_cpu", "--bf16", "false"]
        )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("prompt_loss_weight", "0.1", "prompt_loss_weight must be a number in \\[0, 1\\], got '0.1' \\(str\\)"),
        ("prompt_loss_weight", True, "prompt_loss_weight must be a number in \\[0, 1\\], got True \\(bool\\)"),
        ("prompt_loss_weight_final", "0.5", "prompt_loss_weight_final must be a number in \\[0, 1\\], got '0.5'"),
        ("prompt_loss_weight_policy", 1, "prompt_loss_weight_policy must be the name of a policy, got 1 \\(int\\)"),
    ],
)
def test_the_sft_parser_checks_yaml_values_as_written(tmp_path, key, value, message):
    """argparse would convert a quoted YAML number as it converts a flag; ``plw-plugins sft``'s parser does not."""
    from plw_plugins.cli.sft import make_parser

    config = tmp_path / "cfg.yaml"
    settings = {"output_dir": str(tmp_path), "prompt_loss_weight_policy": "linear", "prompt_loss_weight_final": 0.0,
                "use_cpu": True, "bf16": False}
    config.write_text(yaml.safe_dump({**settings, key: value}))
    with pytest.raises(ValueError, match=message):
        make_parser().parse_args_and_config(args=["--config", str(config)])
    config.write_text(yaml.safe_dump(settings))
    _, args, _ = make_parser().parse_args_and_config(args=["--config", str(config), "--prompt_loss_weight", "0.3"])
    assert args.prompt_loss_weight == 0.3


def test_every_core_key_is_a_field_checked_on_its_raw_value(tmp_path):
    """A key added to the core later is a ``PLWSFTConfig`` field with the same check, or this fails."""
    from plw_plugins.config import CONFIG_KEYS

    assert set(CONFIG_KEYS) <= set(PLWSFTConfig.__dataclass_fields__)
    for key in CONFIG_KEYS:
        with pytest.raises(ValueError, match=f"^{key} must be .*got True \\(bool\\)"):
            make(tmp_path, **{key: True})
