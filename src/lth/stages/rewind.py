"""`rewind`: the start of a pruned level, its source weights (theta_0 for reset, theta_k for
late resetting, the previous level's trained weights for `continue`) masked by the level's
mask. Stored as a reference (start.json: lth.store.starts), not a second float copy."""
from __future__ import annotations

from lth.plan.ids import Stage, consumed
from lth.plan.registry import StageKind, register
from lth.stages import log


def plan(cfg: dict, level: int, mask: Stage, source: Stage, model: dict, make, variant: str) -> Stage:
    """Which source is its upstream, so it consumes no setting of its own."""
    return make("rewind", level, {"mask": mask.id, "init": source.id},
                {**model, "init": source.output("weights"), "mask": mask.output("mask")},
                consumed("rewind", cfg), variant=variant)


RESET_AT_END = "reset_at_end"  # LTH'19 appendix B's strategy 2: a continue lottery's mask from theta_0


def reset_at_end(cfg: dict, level: int, mask: Stage, init: Stage, model: dict, make) -> Stage:
    """The level's mask (found by pruning with continued training) on theta_0, and its
    training from iteration 0 (returned): strategy 2's final reset, at every level."""
    from lth.stages import train
    start = plan(cfg, level, mask, init, model, make, RESET_AT_END)
    return train.plan(cfg, level, start, {**model, **rewound(start)}, make, RESET_AT_END)


FINE_TUNE = "fine_tune"  # Liu et al. 2021: pruning & fine-tuning, on the level's own mask


def fine_tune(cfg: dict, level: int, mask: Stage, pruned: Stage, model: dict, make) -> Stage:
    """The weights the level's mask was cut from (`pruned`: the trained network, or the
    ADMM stage's own weights), masked, and their training from iteration 0 with the
    lottery's recipe (returned): beside the ticket and the random reinit on the same mask."""
    from lth.stages import train
    start = plan(cfg, level, mask, pruned, model, make, FINE_TUNE)
    return train.plan(cfg, level, start, {**model, **rewound(start)}, make, FINE_TUNE, rewound=False)


def rewound(rewind: Stage) -> dict:
    """A consumer's inputs for a rewind's start: its start.json and the two files it names
    (the source weights and the mask; lth.store.starts.load_start applies one to the other),
    so Snakemake orders and reruns on those too. Inputs are not hashed: IDs do not change."""
    return {"start": rewind.output("start"), "source": rewind.inputs["init"], "mask": rewind.inputs["mask"]}


def run(job) -> None:
    """Both files are read here so a start that does not fit the model fails at its rewind."""
    from lth.store import masks
    from lth.store.starts import write_start_reference
    from lth.store.weights import load_mask, load_weights, read_model_info
    spec, out = job.spec, job.dir
    model_info, init_path, mask_path = job.inputs["model"], job.inputs["init"], job.inputs["mask"]
    info = read_model_info(model_info)
    load_weights(init_path, info)
    kept, total = masks.counts(load_mask(mask_path, info))
    write_start_reference(out / "start.json", init_path, mask_path)
    (out / "start.pt").unlink(missing_ok=True)  # the full copy an earlier version of this stage wrote
    log(f"rewind {spec['id']} level {spec['level']}: start = {init_path} masked by {mask_path} "
        f"({kept}/{total} weights; a reference, start.json)")


register(StageKind("rewind", 1, run, {"start": "start.json"}))
