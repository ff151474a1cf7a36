"""Stage kinds, each declared once: name, code version, the config keys it consumes, its
files, its runner, its report figures, its resource class and (for final stages) how the
plan makes it. The Snakefile's rules, `rule all`, the plan, `python -m lth run`, `verify`,
`catalog` and the end-of-run lines all iterate over this registry.

Adding an analysis stage: write its module (a `plan(cfg, plan, make)` function returning its
Stage, a list of them, or None, and a `run(job)` function), register a StageKind for it here
or from a plugin module named in $LTH_PLUGINS, and add a caption under workflow/report/ for
each figure. Nothing else changes.

Runners and planners are named "module:function" and imported only when used, so reading
the registry (the Snakefile does at parse time) stays cheap and torch-free.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Callable

# Files every stage writes besides its own: its spec (what produced it) and its record
# (sha256 and size of every file, written last: a stage without one is not finished).
SPEC, RECORD = "spec.json", "record.json"
PLUGINS_ENV = "LTH_PLUGINS"


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
    runner: str                                  # "module:function", called with a StageJob
    outputs: dict = field(default_factory=dict)  # output name -> file name
    consumes: tuple = ()                         # dotted config keys hashed into the ID
    resources: str = "small"                     # "train" (threads, a GPU), "analysis" or "small"
    figures: dict = field(default_factory=dict)  # output name -> Figure
    plan: str = ""                               # final stages: "module:function" (cfg, plan, make)
    announce: str = ""                           # end-of-run line; "{dir}" is the stage directory (shell-quoted)

    @property
    def files(self) -> dict:
        return {**self.outputs, "spec": SPEC, "record": RECORD}

    def runner_function(self) -> Callable:
        return _resolve(self.runner)

    def planner(self) -> Callable | None:
        return _resolve(self.plan) if self.plan else None


def _resolve(target: str) -> Callable:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


# names Snakemake's input/output lists keep for themselves
_SNAKEMAKE_RESERVED = {"count", "index", "keys", "items", "get", "size_files", "size_files_kb", "size_files_mb",
                       "size_files_gb", "size", "size_kb", "size_mb", "size_gb"}
_KINDS: dict[str, StageKind] = {}
_plugins_loaded: set = set()


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


def _load_plugins() -> None:
    """Modules named in $LTH_PLUGINS (comma-separated) register more kinds when imported.
    Jobs inherit the variable from the snakemake that starts them."""
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
        if name not in _plugins_loaded:
            importlib.import_module(name)
            _plugins_loaded.add(name)


def kinds() -> list[StageKind]:
    _load_plugins()
    return list(_KINDS.values())


def get(name: str) -> StageKind:
    _load_plugins()
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown stage kind {name!r}; known: {', '.join(_KINDS)}") from None


# The keys a training consumes. The snapshot (theta_k) trains the same recipe's first k
# iterations, so the length and evaluation interval are not its business.
_DATA = ("data.dataset", "data.validation_size", "data.split_seed")
_RECIPE = ("train.optimizer", "train.lr", "train.momentum", "train.weight_decay", "train.batch_size",
           "train.seed", "train.warmup", "train.milestones", "train.gamma", "train.dropout", "train.augment",
           "train.precision")
_TRAIN = _DATA + _RECIPE + ("train.iterations", "train.eval_every")

for _kind in (
    StageKind("init", 1, "lth.stages.common:run_init", {"weights": "weights.pt", "model": "model.json"},
              consumes=("model.name", "init.seed")),
    StageKind("train", 1, "lth.stages.common:run_train",
              {"weights": "weights.pt", "metrics": "metrics.parquet", "stats": "stats.json"},
              consumes=_TRAIN, resources="train"),
    StageKind("snapshot", 1, "lth.stages.common:run_train", {"weights": "weights.pt"},
              consumes=_DATA + _RECIPE, resources="train"),
    StageKind("prune", 1, "lth.stages.common:run_prune", {"mask": "mask.parquet"},
              consumes=("prune.strategy", "prune.rate", "prune.conv_rate", "prune.schedule", "prune.output_rate")),
    # A rewind masks its source weights: which source (theta_0, theta_k, the previous level)
    # is its upstream, so it consumes no setting of its own. Its start is a reference to the
    # source weights and the mask (lth.stages.common.load_start), not a copy; outputs are not in IDs.
    StageKind("rewind", 1, "lth.stages.common:run_rewind", {"start": "start.json"}),
    StageKind("reinit", 1, "lth.stages.common:run_reinit", {"start": "start.pt"}),
    StageKind("randmask", 1, "lth.stages.common:run_randmask", {"mask": "mask.parquet"}),
    StageKind("smalldense", 1, "lth.stages.common:run_smalldense", {"weights": "weights.pt", "model": "model.json"}),
    StageKind("perturb", 1, "lth.stages.common:run_perturb", {"start": "start.pt"}),
    StageKind("interpolate", 1, "lth.stages.analyses:run_interpolate", {"table": "path.parquet"},
              consumes=_DATA + ("train.batch_size", "train.precision", "instability.alphas", "instability.train_subset",
                                "instability.bn_batches"), resources="train"),
    StageKind("summary", 1, "lth.stages.analyses:run_summary",
              {"table": "summary.parquet", "csv": "summary.csv", "replicates": "replicates.csv",
               "plot": "accuracy.png", "early_stop": "early_stop.png", "verdict": "verdict.txt"},
              resources="analysis", plan="lth.plan.analyses:summary",
              figures={"plot": Figure("accuracy.rst", "Accuracy", "ticket vs controls: test accuracy at early stop"),
                       "early_stop": Figure("early_stop.rst", "Accuracy",
                                            "ticket vs controls: early-stop iteration"),
                       "verdict": Figure("verdict.rst", "Accuracy", "verdict")},
              announce="summary: {dir}  (print it with: python -m lth summary {dir})"),
    StageKind("correlation", 1, "lth.stages.analyses:run_correlation",
              {"table": "correlation.parquet", "by_p": "rp_vs_p.png", "by_remaining": "rp_vs_remaining.png"},
              consumes=("analysis.rp_fractions",), resources="analysis", plan="lth.plan.analyses:correlation",
              figures={"by_p": Figure("rp_vs_p.rst", "Weight correlation", "R_p vs p"),
                       "by_remaining": Figure("rp_vs_remaining.rst", "Weight correlation",
                                              "R_p vs weights remaining")},
              announce="weight correlation: {dir}"),
    StageKind("anatomy", 1, "lth.stages.analyses:run_anatomy",
              {"table": "anatomy.parquet", "init_hist": "init_histograms.png", "distance": "distance.png",
               "connectivity": "connectivity.png"},
              resources="analysis", plan="lth.plan.analyses:anatomy",
              figures={"init_hist": Figure("init_histograms.rst", "Ticket anatomy", "initial values of survivors",
                                           per_lottery=True),
                       "distance": Figure("distance.rst", "Ticket anatomy", "distance moved", per_lottery=True),
                       "connectivity": Figure("connectivity.rst", "Ticket anatomy", "connectivity",
                                              per_lottery=True)},
              announce="ticket anatomy: {dir}"),
    StageKind("instability", 1, "lth.stages.analyses:run_instability",
              {"table": "instability.parquet", "summary": "summary.csv", "verdict": "verdict.txt",
               "by_alpha": "error_vs_alpha.png",
               "by_k": "instability_vs_k.png", "by_remaining": "instability_vs_remaining.png"},
              consumes=("instability.threshold", "instability.matching"), resources="analysis",
              plan="lth.plan.analyses:instability",
              figures={"summary": Figure("instability_table.rst", "Instability", "instability table"),
                       "verdict": Figure("instability_verdict.rst", "Instability", "verdict"),
                       "by_alpha": Figure("error_vs_alpha.rst", "Instability", "error vs alpha"),
                       "by_k": Figure("instability_vs_k.rst", "Instability", "instability vs k"),
                       "by_remaining": Figure("instability_vs_remaining.rst", "Instability",
                                              "instability vs weights remaining")},
              announce="instability: {dir}"),
    StageKind("classes", 1, "lth.stages.analyses:run_classes", {"table": "classes.csv", "plot": "classes.png"},
              consumes=("classes.min_sparsity", "classes.margin", "classes.tolerance"), resources="analysis",
              plan="lth.plan.analyses:classes",
              figures={"table": Figure("classes_table.rst", "Ticket classes", "conditions table"),
                       "plot": Figure("classes.rst", "Ticket classes", "conditions and prizes")},
              announce="ticket classes: {dir}"),
    StageKind("landscape", 1, "lth.stages.landscape:run", {"table": "grid.parquet", "plot": "landscape.png"},
              consumes=_DATA + ("train.precision", "landscape.levels", "landscape.grid", "landscape.span",
                                "landscape.seed", "landscape.train_subset"), resources="train",
              plan="lth.stages.landscape:plan",
              figures={"plot": Figure("landscape.rst", "Loss landscape", "loss surface around the trained networks",
                                      per_lottery=True)},
              announce="loss landscape: {dir}"),
):
    register(_kind)
