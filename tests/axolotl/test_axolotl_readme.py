"""The README's Axolotl lines are what the offline example runs, and Axolotl's own config loading
accepts them as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from axolotl_harness import ALPACA, write_config

pytestmark = pytest.mark.axolotl

ROOT = Path(__file__).resolve().parents[2]


def readme_yaml(name: str = "axolotl") -> dict:
    match = re.search(rf"<!-- snippet: {name} -->\s*```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert match, f"README has no {name} snippet"
    return yaml.safe_load(match.group(1))


def test_the_readme_lines_are_in_the_offline_example():
    example = yaml.safe_load((ROOT / "examples" / "axolotl" / "tiny_offline.yml").read_text())
    for key, value in readme_yaml().items():
        assert example[key] == value, key


def test_axolotl_loads_the_readme_lines(tmp_path, tiny_model_dir, alpaca_jsonl):
    from axolotl.cli.config import load_cfg

    lines = readme_yaml()
    cfg = load_cfg(str(write_config(tmp_path, tiny_model_dir, {**ALPACA, "path": str(alpaca_jsonl)}, lines)))
    assert cfg.plugins == lines["plugins"]
    assert cfg.prompt_loss_weight == lines["prompt_loss_weight"]


def test_axolotl_loads_the_readme_chat_lines(tmp_path, tiny_model_dir):
    from axolotl.cli.config import load_cfg

    lines = readme_yaml("axolotl-chat")
    [dataset] = lines.pop("datasets")
    chat = tmp_path / "chat.jsonl"
    chat.write_text('{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, '
                    '{"role": "assistant", "content": "Hello."}]}\n')
    cfg = load_cfg(str(write_config(tmp_path, tiny_model_dir, {**dataset, "path": str(chat)}, lines)))
    assert cfg.datasets[0]["type"] == "chat_template"
    assert (cfg.prompt_loss_weight, cfg.system_loss_weight, cfg.template_loss_weight) == (0.1, 0.0, 0.0)
    assert cfg.tool_loss_weight is None and cfg.history_loss_weight is None


def test_the_offline_example_data_is_the_packages_built_in_data():
    import json

    from plw_plugins.cli.builtin_data import alpaca_rows

    lines = (ROOT / "examples" / "axolotl" / "builtin_alpaca.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == alpaca_rows(len(lines))
