"""The stages of one lottery: init, the dense training, then per level prune -> rewind ->
train, with the controls and perturbations of that level beside the ticket. Torch-free."""
from __future__ import annotations

from lth.plan.ids import Stage, consumed, control_seed, perturbation_seed, perturbations


def snapshot(cfg: dict, init: Stage, at: str, make) -> Stage:
    """theta_k: the dense recipe's first k iterations from theta_0. One stage per k, shared by
    every lottery rewinding to k and by the instability sweep of the dense network."""
    return make("snapshot", 0, {"start": init.id},
                {"model": init.output("model"), "start": init.output("weights")},
                consumed("snapshot", cfg, at=at))


def rewound(rewind: Stage) -> dict:
    """A consumer's inputs for a rewind's start: its start.json and the two files it names
    (the source weights and the mask; lth.stages.common.load_start applies one to the other), so
    Snakemake orders and reruns on those too. Inputs are not hashed: IDs do not change."""
    return {"start": rewind.output("start"), "source": rewind.inputs["init"], "mask": rewind.inputs["mask"]}


def chain(cfg: dict, make) -> list:
    """Levels 0..N of one lottery: init, dense training, then prune -> rewind -> train."""
    init = make("init", None, {}, {}, consumed("init", cfg))
    model = {"model": init.output("model")}  # tensor names and shapes, for every later stage
    train = make("train", 0, {"start": init.id}, {**model, "start": init.output("weights")}, consumed("train", cfg))
    levels = [{"train": train}]
    point = cfg["rewind"]["to"]
    source = init
    if point not in ("reset", "continue"):  # late resetting: the dense run's weights at iteration k
        source = snapshot(cfg, init, point, make)
    dense = train
    oneshot = cfg["prune"]["schedule"] == "oneshot"
    for level in range(1, cfg["levels"] + 1):
        if oneshot:  # the dense run's weights, cut to level L's sparsity in one go
            prune = make("prune", level, {"trained": dense.id}, {**model, "weights": dense.output("weights")},
                         consumed("prune", cfg, rounds=level))
        else:
            inputs = {**model, "weights": train.output("weights")}
            if "prune" in levels[-1]:
                inputs["mask"] = levels[-1]["prune"].output("mask")
            prune = make("prune", level, {"trained": train.id}, inputs, consumed("prune", cfg))
        if point == "continue":  # prune and fine-tune: the previous level's trained weights
            source = train
        rewind = make("rewind", level, {"mask": prune.id, "init": source.id},
                      {**model, "init": source.output("weights"), "mask": prune.output("mask")},
                      consumed("rewind", cfg))
        # The rewind point is consumed by training too (it resumes at k); at its default
        # (reset) it drops out of the hash, so reset lotteries keep their IDs.
        train = make("train", level, {"start": rewind.id}, {**model, **rewound(rewind)},
                     consumed("train", cfg, rewind=cfg["rewind"]))
        stages = {"prune": prune, "rewind": rewind, "train": train}
        trained_with = {**model, "mask": prune.output("mask")}
        if cfg["controls"]["random_reinit"]:
            # the level's mask on a fresh init, trained from iteration 0 with the same recipe
            reinit = make("reinit", level, {"mask": prune.id}, {**model, "mask": prune.output("mask")},
                          consumed("reinit", cfg, seed=control_seed("reinit", cfg, level)))
            stages["random_reinit"] = make("train", level, {"start": reinit.id},
                                           {**trained_with, "start": reinit.output("start")}, consumed("train", cfg))
        if cfg["controls"]["random_prune"]:
            # a random mask with the level's per-layer counts, rewound like the ticket
            randmask = make("randmask", level, {"like": prune.id}, {**model, "like": prune.output("mask")},
                            consumed("randmask", cfg, seed=control_seed("randmask", cfg, level)))
            start = make("rewind", level, {"mask": randmask.id, "init": source.id},
                         {**model, "init": source.output("weights"), "mask": randmask.output("mask")},
                         consumed("rewind", cfg))
            stages["random_prune"] = make("train", level, {"start": start.id}, {**model, **rewound(start)},
                                          consumed("train", cfg, rewind=cfg["rewind"]))
        if cfg["controls"]["small_dense"]:
            # a narrower dense model with about as many weights as the level's mask keeps
            small = make("smalldense", level, {"like": prune.id}, {**model, "like": prune.output("mask")},
                         consumed("smalldense", cfg, seed=control_seed("smalldense", cfg, level)))
            stages["small_dense"] = make("train", level, {"start": small.id},
                                         {"model": small.output("model"), "start": small.output("weights")},
                                         consumed("train", cfg))
        chosen = cfg["perturb"]["levels"]
        for name, kind, noise in perturbations(cfg) if chosen is None or level in chosen else ():
            if point == "reset" and kind in ("signs_from_0", "magnitudes_from_0"):
                continue  # at k = 0 the start already has theta_0's signs and magnitudes: the ticket itself
            extra = {"perturbation": kind, "seed": perturbation_seed(cfg, name, level)}
            if noise is not None:
                extra["noise"] = noise
            perturbed = make("perturb", level, {"start": rewind.id, "init": init.id},
                             {**model, **rewound(rewind), "init": init.output("weights")},
                             consumed("perturb", cfg, **extra))
            stages[name] = make("train", level, {"start": perturbed.id},
                                {**trained_with, "start": perturbed.output("start")},
                                consumed("train", cfg, rewind=cfg["rewind"]))
        levels.append(stages)
    return levels
