"""Stage IDs and paths: which settings each stage consumes, hashed with its upstream IDs.

Torch-free and pure: the Snakefile builds the plan at parse time from the validated config.

A stage's ID is sha256 over canonical JSON of {kind, settings it consumes with schema
defaults omitted, upstream stage IDs}. So an edit reruns exactly the stages that consume
the edited setting and everything downstream of them; a new setting whose default keeps
the old behaviour keeps every old ID.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
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
    "snapshot": ("data", "train"),
    "reinit": ("model",),
    "randmask": (),
    "smalldense": ("model",),
    "correlation": ("analysis",),
}

# Keys that may hold a list: the plan runs one lottery per combination of their values.
# The stages that do not consume a key are shared: two rewind points and two rates still
# train the dense network once.
EXPANDABLE = (("prune", "rate"), ("rewind", "to"), ("init", "seed"), ("train", "seed"))
REPLICATE_KEYS = ("init.seed", "train.seed")  # replicates of one lottery, averaged in summaries

# Each stage kind's files, by the name rules and code use for them.
OUTPUTS = {
    "init": {"weights": "weights.pt", "model": "model.json", "spec": "spec.json"},
    "train": {"weights": "weights.pt", "metrics": "metrics.parquet", "stats": "stats.json",
              "spec": "spec.json"},
    "prune": {"mask": "mask.parquet", "spec": "spec.json"},
    "rewind": {"start": "start.pt", "spec": "spec.json"},
    "snapshot": {"weights": "weights.pt", "spec": "spec.json"},
    "reinit": {"start": "start.pt", "spec": "spec.json"},
    "randmask": {"mask": "mask.parquet", "spec": "spec.json"},
    "smalldense": {"weights": "weights.pt", "model": "model.json", "spec": "spec.json"},
    "correlation": {"table": "correlation.parquet", "by_p": "rp_vs_p.png",
                    "by_remaining": "rp_vs_remaining.png", "spec": "spec.json"},
    "summary": {"table": "summary.parquet", "csv": "summary.csv", "replicates": "replicates.csv",
                "plot": "accuracy.png", "spec": "spec.json"},
}


def output_patterns(root: str, kind: str, wildcard: str = "{id}") -> dict:
    """Output paths of a stage kind with the ID left as a Snakemake wildcard."""
    return {name: f"{root}/{kind}/{wildcard}/{f}" for name, f in OUTPUTS[kind].items()}


CONTROLS = ("random_reinit", "random_prune", "small_dense")


def control_seed(kind: str, cfg: dict, level: int) -> int:
    """The recorded seed of a control stage: a pure function of the controls seed, the
    init seed and the level, so it never equals theta_0's own seed stream by accident."""
    text = f"{kind}:{cfg['controls']['seed']}:{cfg['init']['seed']}:{level}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


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
class Run:
    """One lottery: a chain of levels for one combination of the expandable keys."""
    label: str                   # e.g. "rewind.to=500it prune.rate=0.3 init.seed=1", or "imp"
    choices: dict                # "section.key" -> value, for the list-valued keys only
    levels: list = field(default_factory=list)  # level -> {"train": Stage, "prune": ..., "rewind": ...}

    @property
    def lottery(self) -> str:
        """The label without the replicate seeds: runs that differ only in seeds share it."""
        return " ".join(f"{k}={v}" for k, v in self.choices.items() if k not in REPLICATE_KEYS) or "imp"


@dataclass
class Plan:
    config: dict
    stages: dict = field(default_factory=dict)      # id -> Stage
    runs: list = field(default_factory=list)
    summary: Stage | None = None
    correlation: Stage | None = None

    @property
    def levels(self) -> list:
        """The first lottery's levels (the only one unless a key holds a list)."""
        return self.runs[0].levels

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
        return [path for stage in (self.summary, self.correlation) for path in stage.outputs.values()]


def variants(cfg: dict) -> list[tuple[dict, dict]]:
    """(choices, scalar config) for each combination of the list-valued expandable keys."""
    listed = [(sec, key, cfg[sec][key]) for sec, key in EXPANDABLE if isinstance(cfg[sec][key], list)]
    out = []
    for combo in itertools.product(*(values for _, _, values in listed)):
        scalar = copy.deepcopy(cfg)
        choices = {}
        for (sec, key, _), value in zip(listed, combo):
            scalar[sec][key] = value
            choices[f"{sec}.{key}"] = value
        out.append((choices, scalar))
    return out


def build(cfg: dict, schema: dict | None = None) -> Plan:
    """All stages of the experiment described by a validated config."""
    defaults = config_mod.defaults(schema)
    root = cfg["results"]
    plan = Plan(config=cfg)

    def make(kind, level, upstream, inputs, settings):
        sid = stage_id(kind, settings, upstream, defaults)
        return plan.add(Stage(kind, sid, level, settings, upstream, inputs, root))

    for choices, scalar in variants(cfg):
        run = Run(" ".join(f"{k}={v}" for k, v in choices.items()) or "imp", choices)
        run.levels = _chain(scalar, make)
        plan.runs.append(run)

    trains = sorted({lvl[k].id: lvl[k] for run in plan.runs for lvl in run.levels
                     for k in ("train", *CONTROLS) if k in lvl}.values(), key=lambda s: s.id)
    upstream = {"runs": [{"label": run.label, "lottery": run.lottery,
                          "trains": [lvl["train"].id for lvl in run.levels],
                          **{c: [lvl[c].id if c in lvl else None for lvl in run.levels]
                             for c in CONTROLS if cfg["controls"][c]}}
                         for run in plan.runs]}
    inputs = {f"{t.id}_{name}": t.output(name) for t in trains for name in ("metrics", "stats")}
    plan.summary = make("summary", None, upstream, inputs, {})

    # R_p(theta_0, theta_T) of every ticket training: its start weights against its result
    tickets = sorted({lvl["train"].id: lvl["train"] for run in plan.runs for lvl in run.levels}.values(),
                     key=lambda s: s.id)
    inputs = {f"{t.id}_{name}": path for t in tickets
              for name, path in (("start", t.inputs["start"]), ("trained", t.output("weights")),
                                 ("model", t.inputs["model"]), ("stats", t.output("stats")),
                                 ("mask", t.inputs.get("mask")))
              if path is not None}
    runs = {"runs": [{"label": r["label"], "trains": r["trains"]} for r in upstream["runs"]]}
    # "ranking": what R_p ranks in a pruned level (its survivors), so the ID changes with it
    plan.correlation = make("correlation", None, runs, inputs, {"analysis": cfg["analysis"], "ranking": "survivors"})
    return plan


def _chain(cfg: dict, make) -> list:
    """Levels 0..N of one lottery: init, dense training, then prune -> rewind -> train."""
    def consumed(kind, **extra):
        return {**{k: cfg[k] for k in CONSUMES[kind]}, **extra}

    init = make("init", None, {}, {}, consumed("init"))
    model = {"model": init.output("model")}  # tensor names and shapes, for every later stage
    train = make("train", 0, {"start": init.id}, {**model, "start": init.output("weights")}, consumed("train"))
    levels = [{"train": train}]
    point = cfg["rewind"]["to"]
    source = init
    if point != "reset":  # late resetting: the dense run's weights at iteration k
        source = make("snapshot", 0, {"start": init.id}, {**model, "start": init.output("weights")},
                      consumed("snapshot", at=point))
    dense = train
    oneshot = cfg["prune"]["schedule"] == "oneshot"
    for level in range(1, cfg["levels"] + 1):
        if oneshot:  # the dense run's weights, cut to level L's sparsity in one go
            prune = make("prune", level, {"trained": dense.id}, {**model, "weights": dense.output("weights")},
                         consumed("prune", rounds=level))
        else:
            inputs = {**model, "weights": train.output("weights")}
            if "prune" in levels[-1]:
                inputs["mask"] = levels[-1]["prune"].output("mask")
            prune = make("prune", level, {"trained": train.id}, inputs, consumed("prune"))
        if point == "continue":  # prune and fine-tune: the previous level's trained weights
            source = train
        rewind = make("rewind", level, {"mask": prune.id, "init": source.id},
                      {**model, "init": source.output("weights"), "mask": prune.output("mask")},
                      consumed("rewind"))
        # The rewind point is consumed by training too (it resumes at k); at its default
        # (reset) it drops out of the hash, so reset lotteries keep their IDs.
        train = make("train", level, {"start": rewind.id},
                     {**model, "start": rewind.output("start"), "mask": prune.output("mask")},
                     consumed("train", rewind=cfg["rewind"]))
        stages = {"prune": prune, "rewind": rewind, "train": train}
        trained_with = {**model, "mask": prune.output("mask")}
        if cfg["controls"]["random_reinit"]:
            # the level's mask on a fresh init, trained from iteration 0 with the same recipe
            reinit = make("reinit", level, {"mask": prune.id}, {**model, "mask": prune.output("mask")},
                          consumed("reinit", seed=control_seed("reinit", cfg, level)))
            stages["random_reinit"] = make("train", level, {"start": reinit.id},
                                           {**trained_with, "start": reinit.output("start")}, consumed("train"))
        if cfg["controls"]["random_prune"]:
            # a random mask with the level's per-layer counts, rewound like the ticket
            randmask = make("randmask", level, {"like": prune.id}, {**model, "like": prune.output("mask")},
                            consumed("randmask", seed=control_seed("randmask", cfg, level)))
            start = make("rewind", level, {"mask": randmask.id, "init": source.id},
                         {**model, "init": source.output("weights"), "mask": randmask.output("mask")},
                         consumed("rewind"))
            stages["random_prune"] = make("train", level, {"start": start.id},
                                          {**model, "start": start.output("start"), "mask": randmask.output("mask")},
                                          consumed("train", rewind=cfg["rewind"]))
        if cfg["controls"]["small_dense"]:
            # a narrower dense model with about as many weights as the level's mask keeps
            small = make("smalldense", level, {"like": prune.id}, {**model, "like": prune.output("mask")},
                         consumed("smalldense", seed=control_seed("smalldense", cfg, level)))
            stages["small_dense"] = make("train", level, {"start": small.id},
                                         {"model": small.output("model"), "start": small.output("weights")},
                                         consumed("train"))
        levels.append(stages)
    return levels
