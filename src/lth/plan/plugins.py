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


class Registry:
    """Declarations of one sort by name (models, strategies, datasets); every lookup loads
    the plugins first, so a plugin's declarations are seen wherever a built-in's are."""

    def __init__(self, what: str):
        self.what, self.items = what, {}

    def register(self, item):
        known = self.items.get(item.name)
        if known is not None and known != item:
            raise ValueError(f"{self.what} {item.name!r} is declared twice, differently")
        self.items[item.name] = item
        return item

    def get(self, name: str):
        load()
        try:
            return self.items[name]
        except KeyError:
            raise KeyError(f"unknown {self.what} {name!r}; declared: {', '.join(self.items)}") from None

    def names(self) -> list[str]:
        load()
        return list(self.items)


def resolve(target: str):
    """"module:attribute" as the object it names (imported only when used)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
