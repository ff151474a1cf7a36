"""Plugin modules named in $LTH_PLUGINS (comma-separated): importing one registers more
models (lth.plan.models), pruning strategies (lth.plan.strategies), datasets
(lth.nn.data) or stage kinds (lth.plan.registry). Every registry's lookup calls `load()`
first, so a plugin is seen wherever a built-in is. Jobs inherit the variable from the
snakemake that starts them. Torch-free, as a plugin must be at import (build torch objects
inside its factories and runners)."""
from __future__ import annotations

import importlib
import os

ENV = "LTH_PLUGINS"
_loaded: set = set()


def load() -> None:
    for name in filter(None, (n.strip() for n in os.environ.get(ENV, "").split(","))):
        if name not in _loaded:
            _loaded.add(name)  # first: a plugin that looks a registry up while importing does not recurse
            try:
                importlib.import_module(name)
            except ImportError as exc:
                _loaded.discard(name)
                raise ImportError(f"${ENV} names {name!r}, which cannot be imported ({exc}); "
                                  "put its folder on PYTHONPATH or fix the name") from exc


def resolve(target: str):
    """"module:attribute" as the object it names (imported only when used)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
