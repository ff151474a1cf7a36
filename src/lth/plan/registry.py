"""The stage-kind type and its lookup. Each kind is declared once, in its own module under
lth/stages/ (or in a plugin module named in $LTH_PLUGINS, lth.plan.plugins): its name, code
version, the config keys it consumes, its files, its runner, its report figures, its
resource class and, for final stages, its planner and config section. The Snakefile's rules,
`rule all`, the plan, `python -m lth run`, `verify`, `catalog`, the schema and the
end-of-run lines all follow the registered kinds.

Adding an analysis stage: one module under lth/stages/ declaring its StageKind (planner and
runner beside it, its config section in `config`) and a caption under workflow/report/ for
each figure. Nothing else changes: the package's modules are registered when the registry
is first read.

Stage modules are torch-free at import (the Snakefile reads the registry at parse time):
runners import torch, pandas and the like inside their functions.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from typing import Callable

from lth.plan import plugins

# Files every stage writes besides its own: its spec (what produced it) and its record
# (sha256 and size of every file, written last: a stage without one is not finished).
SPEC, RECORD = "spec.json", "record.json"


@dataclass(frozen=True)
class Figure:
    caption: str             # file under workflow/report/
    category: str            # the report's section
    label: str               # what the figure shows (report label "figure")
    per_lottery: bool = False  # one stage per lottery: the report labels it with the lottery


@dataclass(frozen=True)
class StageKind:
    name: str
    # Bump (a one-line change, with a comment saying why) when a fix changes what this kind
    # computes: its ID changes, so it and everything downstream reruns, nothing else.
    version: int
    runner: Callable                             # called with a StageJob (lth.runtime.job)
    outputs: dict = field(default_factory=dict)  # output name -> file name
    consumes: tuple = ()                         # dotted config keys hashed into the ID
    resources: str = "small"                     # "train" (threads, a GPU), "analysis" or "small"
    figures: dict = field(default_factory=dict)  # output name -> Figure
    plan: Callable | None = None                 # final stages: (cfg, plan, make) -> Stage, [Stage] or None
    needs: tuple = ()                            # final kinds whose stages `plan` reads (planned first)
    config: dict = field(default_factory=dict)   # its own config sections: {section: JSON schema}
    announce: str = ""                           # end-of-run line; "{dir}" is the stage directory (shell-quoted)

    @property
    def files(self) -> dict:
        return {**self.outputs, "spec": SPEC, "record": RECORD}


# names Snakemake's input/output lists keep for themselves
_SNAKEMAKE_RESERVED = {"count", "index", "keys", "items", "get", "size_files", "size_files_kb", "size_files_mb",
                       "size_files_gb", "size", "size_kb", "size_mb", "size_gb"}
_KINDS: dict[str, StageKind] = {}
_builtins_loaded = False


def register(kind: StageKind) -> StageKind:
    known = _KINDS.get(kind.name)
    if known is not None and known != kind:
        raise ValueError(f"stage kind {kind.name!r} is registered twice, differently")
    reserved = {"spec", "record"} | _SNAKEMAKE_RESERVED
    if reserved & set(kind.outputs) or not all(name.isidentifier() for name in kind.outputs):
        raise ValueError(f"stage kind {kind.name!r}: output names must be identifiers other than "
                         f"{', '.join(sorted(reserved))}")
    _KINDS[kind.name] = kind
    return kind


def _load() -> None:
    """Every module of lth.stages (each declares its kinds when imported), then the plugins."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        import lth.stages as package
        for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
            importlib.import_module(f"{package.__name__}.{module}")
    plugins.load()


def kinds() -> list[StageKind]:
    _load()
    return list(_KINDS.values())


def get(name: str) -> StageKind:
    _load()
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown stage kind {name!r}; known: {', '.join(_KINDS)}") from None


def planned_in_order() -> list[StageKind]:
    """The final kinds (those with a planner), each after the kinds it `needs`."""
    finals = {k.name: k for k in kinds() if k.plan is not None}
    missing = {n for k in finals.values() for n in k.needs} - set(finals)
    if missing:
        raise ValueError(f"stage kinds need unknown final kinds: {', '.join(sorted(missing))}")
    order = TopologicalSorter({name: kind.needs for name, kind in finals.items()}).static_order()
    return [finals[name] for name in order]
