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
EXPANDABLE = (("prune", "rate"), ("rewind", "to"), ("init", "seed"), ("train", "seed"), ("train", "lr"))
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
        run.pairs = _instability_pairs(scalar, run, plan, make)
        plan.runs.append(run)

    variant_keys = [c for c in CONTROLS if cfg["controls"][c]] + [name for name, _, _ in perturbations(cfg)]
    trains = sorted({lvl[k].id: lvl[k] for run in plan.runs for lvl in run.levels
                     for k in ("train", *variant_keys) if k in lvl}.values(), key=lambda s: s.id)
    upstream = {"runs": [{"label": run.label, "lottery": run.lottery,
                          "trains": [lvl["train"].id for lvl in run.levels],
                          **{c: [lvl[c].id if c in lvl else None for lvl in run.levels] for c in variant_keys}}
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
    # "consecutive": R_p of consecutive levels' trained weights is computed too
    plan.correlation = make("correlation", None, runs, inputs,
                            {"analysis": cfg["analysis"], "ranking": "survivors", "consecutive": True})

    plan.anatomy = [_anatomy(run, make) for run in plan.runs]
    plan.instability = _instability(cfg, plan, make)
    if cfg["classes"]["enabled"]:
        settings = {"classes": {k: v for k, v in cfg["classes"].items() if k != "enabled"}}
        runs = [{"label": run.label, "lr": run.levels[0]["train"].settings["train"]["lr"],
                 "group": " ".join(f"{k}={v}" for k, v in run.choices.items()
                                   if k not in REPLICATE_KEYS and k != "train.lr") or "imp"}
                for run in plan.runs]
        plan.classes = make("classes", None, {"summary": plan.summary.id, "runs": runs},
                            {"summary": plan.summary.output("table")}, settings)
    return plan


def _anatomy(run: Run, make) -> Stage:
    """Ticket anatomy of one lottery: every level's start and trained weights and masks."""
    inputs = {"model": run.levels[0]["train"].inputs["model"]}
    for level, stages in enumerate(run.levels):
        train = stages["train"]
        inputs[f"start_{level}"] = train.inputs["start"]
        inputs[f"trained_{level}"] = train.output("weights")
        inputs[f"stats_{level}"] = train.output("stats")
        if "mask" in train.inputs:
            inputs[f"mask_{level}"] = train.inputs["mask"]
    return make("anatomy", None, {"trains": [lvl["train"].id for lvl in run.levels]}, inputs, {})


def _instability_pairs(cfg: dict, run: Run, plan: Plan, make) -> list[dict]:
    """Pairs of copies trained from each analysed network's start weights with other
    data-order seeds, and the interpolation stage of each pair.

    A copy is the network's own training stage with train.seed replaced, so it is cached
    like any training (a new pair adds jobs; the existing pairs keep their IDs)."""
    ic = cfg["instability"]
    point = cfg["rewind"]["to"]
    out = []
    for level in ic["levels"]:
        if level >= len(run.levels):
            continue  # beyond `levels`: skipped (lth.config.notes says so)
        stages = run.levels[level]
        networks = []  # (variant, k, template training stage's kind-free fields)
        if level == 0:
            dense = stages["train"]
            own = "0it" if point in ("reset", "continue") else point
            for k in dict.fromkeys([own, *ic["points"]]):
                if k in ("0it", "0ep"):
                    networks.append(("ticket", "0it", dense.settings, dense.upstream, dense.inputs))
                    continue
                snap = _snapshot(cfg, plan.stages[dense.upstream["start"]], k, make)
                networks.append(("ticket", k, {**dense.settings, "rewind": {"to": k}}, {"start": snap.id},
                                 {**dense.inputs, "start": snap.output("weights")}))
        else:
            k = "0it" if point == "reset" else point
            for variant in ic["variants"]:
                t = stages["train" if variant == "ticket" else variant]
                networks.append((variant, "0it" if variant == "random_reinit" else k,
                                 t.settings, t.upstream, t.inputs))
        for variant, k, settings, upstream, inputs in networks:
            for pair in range(ic["pairs"]):
                copies = [make("train", level, upstream, inputs,
                               {**settings, "train": {**settings["train"], "seed": copy_seed(cfg, pair, c)}})
                          for c in (0, 1)]
                path_inputs = {"model": inputs["model"], "a": copies[0].output("weights"),
                               "b": copies[1].output("weights")}
                if "mask" in inputs:
                    path_inputs["mask"] = inputs["mask"]
                path = make("interpolate", level, {"a": copies[0].id, "b": copies[1].id}, path_inputs,
                            {"data": cfg["data"], "train": {"batch_size": cfg["train"]["batch_size"]},
                             "instability": {key: ic[key] for key in ("alphas", "train_subset", "bn_batches")}})
                out.append({"level": level, "variant": variant, "k": k, "pair": pair, "path": path})
    return out


def _instability(cfg: dict, plan: Plan, make) -> Stage | None:
    """The instability tables and plots over every pair of every lottery."""
    entries, inputs = [], {}
    for run in plan.runs:
        for e in run.pairs:
            entries.append({"run": run.label, "lottery": run.lottery, "level": e["level"], "variant": e["variant"],
                            "k": e["k"], "pair": e["pair"], "path": e["path"].id})
            inputs[f"path_{e['path'].id}"] = e["path"].output("table")
    if not entries:
        return None
    dense = {run.label: run.levels[0]["train"].id for run in plan.runs}
    inputs.update({f"dense_{tid}": plan.stages[tid].output("metrics") for tid in dense.values()})
    settings = {"instability": {key: cfg["instability"][key] for key in ("threshold", "matching")}}
    return make("instability", None, {"entries": entries, "dense": dense}, inputs, settings)


def _snapshot(cfg: dict, init: Stage, at: str, make) -> Stage:
    """theta_k: the dense recipe's first k iterations from theta_0. One stage per k, shared by
    every lottery rewinding to k and by the instability sweep of the dense network."""
    return make("snapshot", 0, {"start": init.id},
                {"model": init.output("model"), "start": init.output("weights")},
                {**{key: cfg[key] for key in CONSUMES["snapshot"]}, "at": at})


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
        source = _snapshot(cfg, init, point, make)
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
        chosen = cfg["perturb"]["levels"]
        for name, kind, noise in perturbations(cfg) if chosen is None or level in chosen else ():
            if point == "reset" and kind in ("signs_from_0", "magnitudes_from_0"):
                continue  # at k = 0 the start already has theta_0's signs and magnitudes: the ticket itself
            settings = {"perturbation": kind, "seed": perturbation_seed(cfg, name, level)}
            if noise is not None:
                settings["noise"] = noise
            perturbed = make("perturb", level, {"start": rewind.id, "init": init.id},
                             {**model, "start": rewind.output("start"), "init": init.output("weights"),
                              "mask": prune.output("mask")}, settings)
            stages[name] = make("train", level, {"start": perturbed.id},
                                {**trained_with, "start": perturbed.output("start")},
                                consumed("train", rewind=cfg["rewind"]))
        levels.append(stages)
    return levels
