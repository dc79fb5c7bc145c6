import ast
import subprocess
import sys
from pathlib import Path

import plw_plugins

ROOT = Path(__file__).resolve().parents[2]


def test_import_needs_only_torch_and_pluggy():
    blocked = ["transformers", "trl", "lightning", "pytorch_lightning", "axolotl", "datasets", "matplotlib",
               "tokenizers"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import plw_plugins, plw_plugins.cli, plw_plugins.cli.builtin_data\n"
        "print(sorted(plw_plugins.weight_policies()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['constant', 'cosine', 'linear']"


def test_adapters_install_under_plw_plugins_integrations_and_no_top_level_integrations_module(tmp_path):
    code = (
        "import importlib.util\n"
        "print(importlib.util.find_spec('integrations'))\n"
        "print(list(importlib.util.find_spec('plw_plugins.integrations.trl').submodule_search_locations)[0])\n"
    )
    # Outside the checkout, so that only what is installed can be found.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    top_level, trl_folder = out.stdout.split()
    assert top_level == "None"
    assert Path(trl_folder) == ROOT / "integrations" / "trl"


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function, relative imports resolved."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_the_core_imports_no_command_and_no_adapter():
    core = sorted((ROOT / "plw_plugins").glob("*.py"))
    assert {path.name for path in core} >= {"loss.py", "masks.py", "policies.py"}
    for path in core:
        upward = {name for name in imported_modules(path, "plw_plugins")
                  if name.startswith(("plw_plugins.cli", "plw_plugins.integrations"))}
        assert not upward, f"{path.name} imports {sorted(upward)}"


def test_the_lightning_callback_and_mixin_do_not_import_each_other():
    folder = ROOT / "integrations" / "lightning"
    package = "plw_plugins.integrations.lightning"
    callback = imported_modules(folder / "callback.py", package)
    mixin = imported_modules(folder / "mixin.py", package)
    assert not (f"{package}.callback" in mixin and f"{package}.mixin" in callback)


def test_public_names():
    for name in ("build_loss_masks", "prompt_weighted_loss", "prompt_weighted_loss_from_hidden", "PLWLoss",
                 "LossMasks", "validate_prompt_loss_weight", "hookimpl", "PromptLossWeightConfig"):
        assert name in plw_plugins.__all__ and hasattr(plw_plugins, name)


def test_loss_metrics_are_token_weighted_over_calls():
    import torch

    from plw_plugins import PLWLoss
    from plw_plugins.metrics import LossMetrics

    def call(prompt_loss, prompt_tokens, completion_loss, completion_tokens):
        t = torch.tensor
        return PLWLoss(t(0.0), t(prompt_loss), t(completion_loss), t(prompt_tokens), t(completion_tokens), t(0.0))

    metrics = LossMetrics()
    metrics.add(call(2.0, 1.0, 1.0, 3.0))
    metrics.add(call(4.0, 3.0, 0.0, 0.0))
    assert metrics.pop() == {"prompt_loss": 3.5, "completion_loss": 1.0}  # not the per-call means (3.0, 0.5)
    assert metrics.pop() == {}
    metrics.add(call(1.0, 2.0, 1.0, 2.0))
    metrics.reset()
    assert metrics.pop() == {}
