"""`randmask`: the random-pruning control: a random mask with the level's per-layer counts,
rewound and trained like the ticket."""
from __future__ import annotations

from lth.plan.ids import Stage, consumed, control_seed
from lth.plan.registry import StageKind, register
from lth.stages import log, rewind, train

VARIANT = "random_prune"


def plan(cfg: dict, level: int, prune: Stage, source: Stage, model: dict, make) -> Stage:
    """The control's mask, its start and its training (returned)."""
    randmask = make("randmask", level, {"like": prune.id}, {**model, "like": prune.output("mask")},
                    consumed("randmask", cfg, seed=control_seed("randmask", cfg, level)), variant=VARIANT)
    start = rewind.plan(cfg, level, randmask, source, model, make, VARIANT)
    return train.plan(cfg, level, start, {**model, **rewind.rewound(start)}, make, VARIANT)


def run(job) -> None:
    from lth.nn import pruning
    from lth.store import masks
    from lth.store.weights import load_mask, read_model_info
    spec, out, model_info, like_path = job.spec, job.dir, job.inputs["model"], job.inputs["like"]
    info = read_model_info(model_info)
    mask = pruning.random_like(load_mask(like_path, info), spec["settings"]["seed"])
    masks.write(out / "mask.parquet", mask)
    kept, total = masks.counts(mask)
    log(f"randmask {spec['id']} level {spec['level']}: {kept}/{total} weights kept at random")


register(StageKind("randmask", 1, run, {"mask": "mask.parquet"}))
