"""The stages of one lottery: init, the dense training, then per level prune -> rewind ->
train, with the controls and perturbations of that level beside the ticket. Torch-free."""
from __future__ import annotations

from .stage_ids import CONSUMES, Stage, control_seed, perturbation_seed, perturbations


def snapshot(cfg: dict, init: Stage, at: str, make) -> Stage:
    """theta_k: the dense recipe's first k iterations from theta_0. One stage per k, shared by
    every lottery rewinding to k and by the instability sweep of the dense network."""
    return make("snapshot", 0, {"start": init.id},
                {"model": init.output("model"), "start": init.output("weights")},
                {**{key: cfg[key] for key in CONSUMES["snapshot"]}, "at": at})


def chain(cfg: dict, make) -> list:
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
        source = snapshot(cfg, init, point, make)
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
