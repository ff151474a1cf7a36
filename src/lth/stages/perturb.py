"""`perturb`: early-phase perturbations of the rewound subnetwork (Frankle, Schwab & Morcos
2020; lth.nn.perturb), each trained like a control beside the ticket."""
from __future__ import annotations

from lth.plan.ids import Stage, consumed, perturbation_seed, perturbations
from lth.plan.registry import StageKind, register
from lth.stages import log, rewind, train


def plan(cfg: dict, level: int, start: Stage, init: Stage, prune: Stage, model: dict, make) -> dict:
    """{variant name: training} of the configured perturbations of this level's start."""
    chosen = cfg["perturb"]["levels"]
    out = {}
    for name, kind, noise in perturbations(cfg) if chosen is None or level in chosen else ():
        if cfg["rewind"]["to"] == "reset" and kind in ("signs_from_0", "magnitudes_from_0"):
            continue  # at k = 0 the start already has theta_0's signs and magnitudes: the ticket itself
        extra = {"perturbation": kind, "seed": perturbation_seed(cfg, name, level)}
        if noise is not None:
            extra["noise"] = noise
        perturbed = make("perturb", level, {"start": start.id, "init": init.id},
                         {**model, **rewind.rewound(start), "init": init.output("weights")},
                         consumed("perturb", cfg, **extra), variant=name)
        out[name] = train.plan(cfg, level, perturbed, {**model, "mask": prune.output("mask"),
                                                      "start": perturbed.output("start")}, make, name)
    return out


def run(job) -> None:
    from lth.nn import perturb
    from lth.store import ptfile
    from lth.store.starts import load_start
    from lth.store.weights import check_masked, load_mask, load_weights, read_model_info
    spec, inputs, out = job.spec, job.inputs, job.dir
    info = read_model_info(inputs["model"])
    mask = load_mask(inputs["mask"], info)
    start = load_start(inputs["start"], info)
    check_masked(inputs["start"], start, mask, inputs["mask"])
    s = spec["settings"]
    state = perturb.perturb(s["perturbation"], start, load_weights(inputs["init"], info), mask, s["seed"],
                            s.get("noise", 1.0))
    ptfile.save(out / "start.pt", state)
    log(f"perturb {spec['id']} level {spec['level']}: {s['perturbation']} seed {s['seed']}"
        + (f" noise {s['noise']}" if "noise" in s else ""))


register(StageKind("perturb", 1, run, {"start": "start.pt"}))
