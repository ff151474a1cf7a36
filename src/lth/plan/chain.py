"""The stages of one lottery: init, the dense training, then per level prune -> rewind ->
train, with the controls and perturbations of that level beside the ticket, each made by
its kind's planner (lth.stages). Torch-free."""
from __future__ import annotations

from lth.stages import init as init_kind
from lth.stages import perturb, pretrain, prune, randmask, reinit, rewind, smalldense, train

TICKET = "ticket"


def chain(cfg: dict, make) -> list:
    """Levels 0..N of one lottery: {"train": ticket training, "prune", "rewind", and one
    training per control or perturbation, by its variant name}."""
    init = init_kind.plan(cfg, make)
    model = {"model": init.output("model")}  # tensor names and shapes, for every later stage
    begin = init  # theta_0, or the state pretrained on restricted data (the early-phase paper, §6)
    if pretrain.wanted(cfg) and not cfg["pretrain"]["sparse"]:
        begin = pretrain.plan(cfg, 0, init, {**model, "start": init.output("weights")}, init.output("weights"), make)
    dense = train.plan(cfg, 0, begin, {**model, "start": begin.output("weights")}, make, TICKET, rewound=False)
    levels = [{"train": dense}]
    point = cfg["rewind"]["to"]
    source = begin
    if point not in ("reset", "continue"):  # late resetting: the dense run's weights at iteration k
        source = train.snapshot(cfg, begin, point, make, init.output("model"))
    trained, mask = dense, None
    for level in range(1, cfg["levels"] + 1):
        pruned = dense if cfg["prune"]["schedule"] == "oneshot" else trained
        cut = prune.plan(cfg, level, pruned, mask, model, make)
        if point == "continue":  # prune and fine-tune: the previous level's trained weights
            source = trained
        start = rewind.plan(cfg, level, cut, source, model, make, TICKET)
        trained = train.plan(cfg, level, start, {**model, **rewind.rewound(start)}, make, TICKET)
        stages = {"prune": cut, "rewind": start, "train": trained}
        if cfg["controls"]["random_reinit"]:
            stages[reinit.VARIANT] = reinit.plan(cfg, level, cut, model, make)
        if cfg["controls"]["random_prune"]:
            stages[randmask.VARIANT] = randmask.plan(cfg, level, cut, source, model, make)
        if cfg["controls"]["small_dense"]:
            stages[smalldense.VARIANT] = smalldense.plan(cfg, level, cut, model, make)
        stages.update(perturb.plan(cfg, level, start, init, cut, model, make))
        if pretrain.wanted(cfg) and cfg["pretrain"]["sparse"]:  # theta_0 ⊙ m pretrained, then trained
            pre = pretrain.plan(cfg, level, start, {**model, **rewind.rewound(start)}, init.output("weights"), make,
                                pretrain.VARIANT)
            stages[pretrain.VARIANT] = train.plan(cfg, level, pre, {**model, "start": pre.output("weights"),
                                                                    "mask": cut.output("mask")},
                                                  make, pretrain.VARIANT, rewound=False)
        if cfg["controls"]["fine_tune"] and point != "continue":  # a continue ticket is the fine-tuning
            weights = cut if "weights" in cut.outputs else pruned  # a mask stage that trains (ADMM) moved them
            stages[rewind.FINE_TUNE] = rewind.fine_tune(cfg, level, cut, weights, model, make)
        if point == "continue" and cfg["rewind"]["reset_at_end"]:
            stages[rewind.RESET_AT_END] = rewind.reset_at_end(cfg, level, cut, init, model, make)
        levels.append(stages)
        mask = cut
    return levels
