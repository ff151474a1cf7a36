"""Stage IDs and paths: which settings each stage kind consumes, hashed with its upstream IDs;
the files each kind writes; the seeds of controls, copies and perturbations; the Stage, Run
and Plan records that lth.plan fills.

A stage's ID is sha256 over canonical JSON of {kind, settings it consumes with schema
defaults omitted, upstream stage IDs}. So an edit reruns exactly the stages that consume
the edited setting and everything downstream of them; a new setting whose default keeps
the old behaviour keeps every old ID. Torch-free and pure.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

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
EXPANDABLE = (("prune", "rate"), ("prune", "strategy"), ("prune", "schedule"), ("rewind", "to"),
              ("init", "seed"), ("train", "seed"), ("train", "lr"))
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
                "plot": "accuracy.png", "early_stop": "early_stop.png", "spec": "spec.json"},
    "perturb": {"start": "start.pt", "spec": "spec.json"},
    "interpolate": {"table": "path.parquet", "spec": "spec.json"},
    "instability": {"table": "instability.parquet", "summary": "summary.csv", "by_alpha": "error_vs_alpha.png",
                    "by_k": "instability_vs_k.png", "by_remaining": "instability_vs_remaining.png",
                    "spec": "spec.json"},
    "anatomy": {"table": "anatomy.parquet", "init_hist": "init_histograms.png", "distance": "distance.png",
                "connectivity": "connectivity.png", "spec": "spec.json"},
    "classes": {"table": "classes.csv", "plot": "classes.png", "spec": "spec.json"},
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
            out += [(f"noise_{n:g}", kind, n) for n in cfg["perturb"]["noise"]]
        else:
            out.append((kind, kind, None))
    return out


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
    summary: Stage | None = None
    correlation: Stage | None = None
    anatomy: list = field(default_factory=list)     # one Stage per run
    instability: Stage | None = None
    classes: Stage | None = None

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
        finals = [self.summary, self.correlation, *self.anatomy, self.instability, self.classes]
        return [path for stage in finals if stage is not None for path in stage.outputs.values()]
