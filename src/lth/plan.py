"""Stage IDs and paths: which settings each stage consumes, hashed with its upstream IDs.

Torch-free and pure: the Snakefile builds the plan at parse time from the validated config.

A stage's ID is sha256 over canonical JSON of {kind, settings it consumes with schema
defaults omitted, upstream stage IDs}. So an edit reruns exactly the stages that consume
the edited setting and everything downstream of them; a new setting whose default keeps
the old behaviour keeps every old ID.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from . import config as config_mod

ID_LENGTH = 12

# Which config sections each stage kind consumes. Execution settings (results, data_dir,
# threads) are never hashed: they change where or how fast, not what.
CONSUMES = {
    "init": ("model", "init"),
    "train": ("data", "train"),
    "prune": ("prune",),
    "rewind": ("rewind",),
}

# Each stage kind's files, by the name rules and code use for them.
OUTPUTS = {
    "init": {"weights": "weights.pt", "model": "model.json", "spec": "spec.json"},
    "train": {"weights": "weights.pt", "metrics": "metrics.parquet", "stats": "stats.json",
              "spec": "spec.json"},
    "prune": {"mask": "mask.parquet", "spec": "spec.json"},
    "rewind": {"start": "start.pt", "spec": "spec.json"},
    "summary": {"table": "summary.parquet", "csv": "summary.csv", "plot": "accuracy.png",
                "spec": "spec.json"},
}


def output_patterns(root: str, kind: str, wildcard: str = "{id}") -> dict:
    """Output paths of a stage kind with the ID left as a Snakemake wildcard."""
    return {name: f"{root}/{kind}/{wildcard}/{f}" for name, f in OUTPUTS[kind].items()}


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


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


def stage_id(kind: str, settings: dict, upstream: dict, defaults: dict) -> str:
    payload = {"kind": kind, "settings": _without_defaults(settings, defaults), "upstream": upstream}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:ID_LENGTH]


@dataclass(frozen=True)
class Stage:
    kind: str
    id: str
    level: int | None
    settings: dict
    upstream: dict           # name -> upstream stage ID (hashed)
    inputs: dict             # name -> path (not hashed: paths follow from IDs)
    root: str

    @property
    def dir(self) -> str:
        return f"{self.root}/{self.kind}/{self.id}"

    def output(self, name: str) -> str:
        return f"{self.dir}/{OUTPUTS[self.kind][name]}"

    @property
    def outputs(self) -> dict:
        return {name: self.output(name) for name in OUTPUTS[self.kind]}

    def spec(self) -> dict:
        """What spec.json holds: exactly the settings and upstream IDs that produced the stage."""
        return {"kind": self.kind, "id": self.id, "level": self.level,
                "settings": self.settings, "upstream": self.upstream}


@dataclass
class Plan:
    config: dict
    stages: dict = field(default_factory=dict)      # id -> Stage
    levels: list = field(default_factory=list)      # level -> {"train": Stage, "prune": ..., "rewind": ...}
    summary: Stage | None = None

    def add(self, stage: Stage) -> Stage:
        known = self.stages.get(stage.id)
        if known is not None and known.spec() != stage.spec():
            raise RuntimeError(f"stage ID collision for {stage.id}")
        self.stages[stage.id] = stage
        return stage

    def get(self, kind: str, sid: str) -> Stage:
        stage = self.stages.get(sid)
        if stage is None or stage.kind != kind:
            raise KeyError(f"no {kind} stage with ID {sid} in this config")
        return stage

    def targets(self) -> list[str]:
        return list(self.summary.outputs.values())


def build(cfg: dict, schema: dict | None = None) -> Plan:
    """All stages of the experiment described by a validated config."""
    defaults = config_mod.defaults(schema)
    root = cfg["results"]
    plan = Plan(config=cfg)

    def make(kind, level, upstream, inputs):
        settings = {k: cfg[k] for k in CONSUMES[kind]}
        sid = stage_id(kind, settings, upstream, defaults)
        return plan.add(Stage(kind, sid, level, settings, upstream, inputs, root))

    init = make("init", None, {}, {})
    model = {"model": init.output("model")}  # tensor names and shapes, for every later stage
    train = make("train", 0, {"start": init.id}, {**model, "start": init.output("weights")})
    plan.levels.append({"train": train})
    for level in range(1, cfg["levels"] + 1):
        inputs = {**model, "weights": train.output("weights")}
        previous_prune = plan.levels[-1].get("prune")
        if previous_prune is not None:
            inputs["mask"] = previous_prune.output("mask")
        prune = make("prune", level, {"trained": train.id}, inputs)
        rewind = make("rewind", level, {"mask": prune.id, "init": init.id},
                      {**model, "init": init.output("weights"), "mask": prune.output("mask")})
        train = make("train", level, {"start": rewind.id},
                     {**model, "start": rewind.output("start"), "mask": prune.output("mask")})
        plan.levels.append({"prune": prune, "rewind": rewind, "train": train})

    trains = [lvl["train"] for lvl in plan.levels]
    upstream = {"trains": [t.id for t in trains]}
    sid = stage_id("summary", {}, upstream, defaults)
    inputs = {f"level{i}_{name}": t.output(name) for i, t in enumerate(trains)
              for name in ("metrics", "stats")}
    plan.summary = plan.add(Stage("summary", sid, None, {}, upstream, inputs, root))
    return plan
