"""Stage IDs and paths: the settings a stage consumes (lth.plan.registry names the keys), hashed
with its kind's code version and upstream IDs; the seeds of controls, copies and
perturbations; the Stage, Run and Plan records that lth.plan.build fills.

A stage's ID is sha256 over canonical JSON (lth.plan.canonical) of {kind, code version, settings
it consumes with schema defaults omitted, upstream stage IDs}. So an edit reruns exactly the stages that consume
the edited setting and everything downstream of them; a new setting whose default keeps
the old behaviour keeps every old ID. Torch-free and pure.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from lth.plan import canonical, registry

ID_LENGTH = 12

# Keys that may hold a list: the plan runs one lottery per combination of their values.
# The stages that do not consume a key are shared: two rewind points and two rates still
# train the dense network once.
EXPANDABLE = (("prune", "rate"), ("prune", "strategy"), ("prune", "schedule"), ("rewind", "to"),
              ("init", "seed"), ("train", "seed"), ("train", "lr"), ("init", "std_scale"), ("train", "warmup"),
              ("train", "dense_lr"), ("pretrain", "task"), ("pretrain", "length"), ("model", "residual"))
REPLICATE_KEYS = ("init.seed", "train.seed")  # replicates of one lottery, averaged in summaries
# What defines a lottery: recorded on every stage that depends on it (Stage.lottery), so the
# catalog can filter any stage by any of them.
LOTTERY_KEYS = tuple(f"{section}.{key}" for section, key in EXPANDABLE) + (
    "prune.output_rate", "prune.conv_rate", "prune.granularity", "prune.criterion", "model.widths")


def lottery_of(kind: str, settings: dict, upstream: list[dict]) -> dict:
    """The lottery settings a stage depends on: those it consumes itself (a snapshot's point
    is the rewind point of the lotteries using it) and those of its upstream stages, where
    they do not disagree (an analysis over several learning rates has none)."""
    own = {}
    for section, value in settings.items():
        if isinstance(value, dict):
            own.update({f"{section}.{k}": v for k, v in value.items() if f"{section}.{k}" in LOTTERY_KEYS})
    if kind == "snapshot":
        own["rewind.to"] = settings["at"]
    shared: dict = {}
    disagree = set()
    for other in upstream:
        for key, value in other.items():
            if shared.setdefault(key, value) != value:
                disagree.add(key)
    return {**{k: v for k, v in shared.items() if k not in disagree}, **own}


def consumed(kind: str, cfg: dict, **extra) -> dict:
    """The settings a stage of `kind` hashes: the registry's keys of cfg (nested by section,
    e.g. {"train": {"lr": ...}}) plus kind-specific extras (a seed, a rewind point)."""
    out: dict = {}
    for dotted in registry.get(kind).consumes:
        *sections, key = dotted.split(".")
        source, target = cfg, out
        for section in sections:
            source = source[section]
            target = target.setdefault(section, {})
        target[key] = source[key]
    return {**out, **extra}


def output_patterns(root: str, kind: str, wildcard: str = "{id}") -> dict:
    """Every file of a stage kind with the ID left as a Snakemake wildcard."""
    return {name: f"{root}/{kind}/{wildcard}/{f}" for name, f in registry.get(kind).files.items()}


CONTROLS = ("random_reinit", "random_prune", "small_dense", "fine_tune")


def control_seed(kind: str, cfg: dict, level: int) -> int:
    """The recorded seed of a control stage: a pure function of the controls seed, the
    init seed and the level, so it never equals theta_0's own seed stream by accident."""
    text = f"{kind}:{cfg['controls']['seed']}:{cfg['init']['seed']}:{level}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def copy_seed(cfg: dict, pair: int, copy: int) -> int:
    """Data-order seed of one copy of an instability pair: a pure function of the
    instability seed, the lottery's own data-order seed, the pair and the copy."""
    text = f"instability:{cfg['instability']['seed']}:{cfg['train']['seed']}:{pair}:{copy}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def perturbation_seed(cfg: dict, variant: str, level: int) -> int:
    text = f"perturb:{variant}:{cfg['perturb']['seed']}:{cfg['init']['seed']}:{level}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def perturbations(cfg: dict) -> list[tuple[str, str, float | None]]:
    """(variant name, perturbation kind, noise scale or None) of the configured perturbations."""
    out = []
    for kind in cfg["perturb"]["kinds"]:
        if kind == "noise":
            # the canonical number, whole (noise_1, noise_0.5): names of distinct scales never collide
            out += [(f"noise_{n}", kind, n) for n in cfg["perturb"]["noise"]]
        else:
            out.append((kind, kind, None))
    return out


def _without_defaults(settings: dict, defaults: dict) -> dict:
    out = {}
    for key, value in settings.items():
        default = defaults.get(key, object()) if isinstance(defaults, dict) else object()
        if isinstance(value, dict) and isinstance(default, dict):
            pruned = _without_defaults(value, default)
            if pruned:
                out[key] = pruned
        elif value != default:
            out[key] = value
    return out


def stage_id(kind: str, settings: dict, upstream: dict, defaults: dict, version: int | None = None,
             layout: dict | None = None) -> str:
    """sha256 over canonical JSON of the kind, its code version, the settings it consumes
    (those at their canonical default left out) and its upstream IDs (an analysis: its
    layout, which names them)."""
    version = registry.get(kind).version if version is None else version
    payload = {"kind": kind, "version": version, "settings": _without_defaults(settings, defaults),
               "upstream": upstream if layout is None else layout}
    return canonical.digest(payload, ID_LENGTH)


def layout_of(spec: dict) -> dict:
    """An analysis's layout from its spec.json; a spec written before `layout` had its own
    key holds it as `upstream` (what the ID hashed: the same thing)."""
    return spec["layout"] if "layout" in spec else spec["upstream"]


@dataclass
class Stage:
    kind: str
    id: str
    level: int | None
    settings: dict
    upstream: dict           # name -> ID of a stage whose files it reads (for chain stages: hashed)
    inputs: dict             # name -> path (not hashed: paths follow from IDs)
    root: str
    version: int = 1
    # An analysis's identity: which trainings, grouped how (lotteries, levels, pairs). Hashed
    # in place of `upstream` (the shape `upstream` had before it was one {name: id} for
    # every kind: so IDs hold); it names every upstream ID itself.
    layout: dict | None = None
    # What the plan knows and files alone do not say; not hashed (lth.report.catalog reads them):
    variant: str | None = None   # ticket, random_reinit, ..., a perturbation, instability_copy
    lottery: dict = field(default_factory=dict)  # the lottery settings it depends on (lottery_of)
    related: dict = field(default_factory=dict)  # name -> ID of a stage it belongs with

    @property
    def dir(self) -> str:
        return f"{self.root}/{self.kind}/{self.id}"

    def output(self, name: str) -> str:
        return f"{self.dir}/{registry.get(self.kind).files[name]}"

    @property
    def outputs(self) -> dict:
        """Every file of the stage, its spec.json and record.json included."""
        return {name: f"{self.dir}/{f}" for name, f in registry.get(self.kind).files.items()}

    def identity(self) -> dict:
        """What the ID hashes (besides the schema defaults), as spec.json keeps it."""
        out = {"kind": self.kind, "id": self.id, "version": self.version, "level": self.level,
               "settings": self.settings, "upstream": self.upstream}
        if self.layout is not None:
            out["layout"] = self.layout
        return out

    def spec(self) -> dict:
        """What spec.json holds: the settings, upstream IDs and layout that produced the
        stage, and what the plan knew of it (variant, lottery, related stages)."""
        out = {**self.identity(), "variant": self.variant, "lottery": self.lottery}
        if self.related:
            out["related"] = self.related
        return out

    def manifest(self) -> dict:
        """What a job reads (lth.runtime.job): the spec, plus where its inputs and outputs are."""
        return {**self.spec(), "dir": self.dir, "inputs": self.inputs, "outputs": self.outputs}


@dataclass
class Run:
    """One lottery: a chain of levels for one combination of the expandable keys."""
    label: str                   # e.g. "rewind.to=500it prune.rate=0.3 init.seed=1", or "imp"
    choices: dict                # "section.key" -> value, for the list-valued keys only
    levels: list = field(default_factory=list)  # level -> {"train": Stage, "prune": ..., "rewind": ...}
    pairs: list = field(default_factory=list)   # instability: {"level", "variant", "k", "pair", "path": Stage}

    @property
    def lottery(self) -> str:
        """The label without the replicate seeds: runs that differ only in seeds share it."""
        return " ".join(f"{k}={v}" for k, v in self.choices.items() if k not in REPLICATE_KEYS) or "imp"


@dataclass
class Plan:
    config: dict
    stages: dict = field(default_factory=dict)      # id -> Stage
    runs: list = field(default_factory=list)
    finals: dict = field(default_factory=dict)      # final stage kind -> [Stage] (lth.plan.registry's planners)

    @property
    def levels(self) -> list:
        """The first lottery's levels (the only one unless a key holds a list)."""
        return self.runs[0].levels

    def final(self, kind: str) -> Stage | None:
        found = self.finals.get(kind, [])
        return found[0] if found else None

    # the built-in final stages by name, for the code and tests that read them
    summary = property(lambda self: self.final("summary"))
    correlation = property(lambda self: self.final("correlation"))
    instability = property(lambda self: self.final("instability"))
    classes = property(lambda self: self.final("classes"))
    anatomy = property(lambda self: self.finals.get("anatomy", []))

    def add(self, stage: Stage) -> Stage:
        """The stage, or the one with its ID made before (another lottery's: the same stage,
        its first variant kept)."""
        known = self.stages.get(stage.id)
        if known is None:
            self.stages[stage.id] = stage
            return stage
        if known.identity() != stage.identity():
            raise RuntimeError(f"stage ID collision for {stage.id}")
        known.variant = known.variant or stage.variant
        return known

    def get(self, kind: str, sid: str) -> Stage:
        stage = self.stages.get(sid)
        if stage is None or stage.kind != kind:
            raise KeyError(f"no {kind} stage with ID {sid} in this config")
        return stage

    def targets(self) -> list[str]:
        """Every file of every stage: a missing one (spec.json and record.json included)
        reruns its stage, which Snakemake checks only for files something asks for."""
        return [path for stage in self.stages.values() for path in stage.outputs.values()]
