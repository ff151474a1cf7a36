"""`reinit`: the random-reinitialisation control (Frankle & Carbin 2019): the level's mask on
a fresh init drawn from the stage's recorded seed, trained from iteration 0 like the ticket."""
from __future__ import annotations

from lth.plan.ids import Stage, consumed, control_seed
from lth.plan.registry import StageKind, register
from lth.stages import log, train

VARIANT = "random_reinit"


def plan(cfg: dict, level: int, prune: Stage, model: dict, make) -> Stage:
    """The control's start and its training (returned)."""
    reinit = make("reinit", level, {"mask": prune.id}, {**model, "mask": prune.output("mask")},
                  consumed("reinit", cfg, seed=control_seed("reinit", cfg, level)), variant=VARIANT)
    return train.plan(cfg, level, reinit, {**model, "mask": prune.output("mask"), "start": reinit.output("start")},
                      make, VARIANT, rewound=False)


def run(job) -> None:
    from lth.nn import models  # torch
    from lth.store import ptfile
    from lth.store.weights import load_mask, masked, read_model_info
    spec, out, model_info, mask_path = job.spec, job.dir, job.inputs["model"], job.inputs["mask"]
    info = read_model_info(model_info)
    seed = spec["settings"]["seed"]
    scale = spec["settings"].get("init", {}).get("std_scale", 1.0)  # the lottery's init distribution
    fresh = {k: v.numpy() for k, v in models.from_info(info, seed, scale).state_dict().items()}
    mask = load_mask(mask_path, info)
    ptfile.save(out / "start.pt", masked(fresh, mask), masks=mask)
    log(f"reinit {spec['id']} level {spec['level']}: fresh init seed {seed} masked by {mask_path}")


register(StageKind("reinit", 1, run, {"start": "start.pt"}, consumes=("init.std_scale",)))
