"""The plugin manager: built-in policies and those of installed ``plw_plugins`` entry points."""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

import pluggy

from . import hookspecs

BUILTIN_PLUGINS = ("plw_plugins.policies",)

PolicyFactory = Callable[[Any], Any]


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use (``cache_clear()`` rebuilds it)."""
    manager = pluggy.PluginManager("plw_plugins")
    manager.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        manager.register(importlib.import_module(name), name)
    manager.load_setuptools_entrypoints("plw_plugins")
    return manager


def weight_policies() -> dict[str, PolicyFactory]:
    """Every registered weighting policy, by name."""
    policies: dict[str, PolicyFactory] = {}

    def register(name: str, factory: PolicyFactory) -> None:
        if name in policies:
            raise ValueError(f"weight policy {name!r} is registered twice")
        policies[name] = factory

    get_plugin_manager().hook.register_weight_policies(register=register)
    return policies
