"""The hooks a plw-plugins plugin can implement. Every hook is documented here, where it is declared.

A plugin is a module or object with functions marked ``@plw_plugins.hookimpl``, registered through
the ``plw_plugins`` entry-point group of its distribution::

    [project.entry-points.plw_plugins]
    my_policies = "my_package.policies"
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("plw_plugins")
hookimpl = pluggy.HookimplMarker("plw_plugins")


@hookspec
def register_weight_policies(register: Callable[..., None]) -> None:
    """Register weighting policies by calling ``register(name, factory)`` once for each.

    ``factory(config)`` receives the validated ``PromptLossWeightConfig`` and returns an object with
    ``weight_at(progress: float) -> float``: the prompt loss weight at training progress ``progress``
    in [0, 1] (0 at the first optimiser step, 1 at the last). It is resolved once at setup and then
    asked every step, so it should be cheap. Names are unique across all plugins.
    """
