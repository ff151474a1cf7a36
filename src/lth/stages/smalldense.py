"""`smalldense`: the small-dense baseline (Ma et al. 2021): the model family narrowed until
its dense weight count matches the level's surviving weights, freshly initialised and
trained from iteration 0."""
from __future__ import annotations

from lth.plan.ids import Stage, consumed, control_seed
from lth.plan.registry import StageKind, register
from lth.stages import log, train

VARIANT = "small_dense"


def plan(cfg: dict, level: int, prune: Stage, model: dict, make) -> Stage:
    """The narrower model and its training (returned)."""
    small = make("smalldense", level, {"like": prune.id}, {**model, "like": prune.output("mask")},
                 consumed("smalldense", cfg, seed=control_seed("smalldense", cfg, level)), variant=VARIANT)
    return train.plan(cfg, level, small, {"model": small.output("model"), "start": small.output("weights")},
                      make, VARIANT, rewound=False)


def run(job) -> None:
    from lth.nn import models  # torch
    from lth.store import masks, ptfile
    from lth.store.artifacts import write_json
    from lth.store.weights import load_mask, read_model_info
    spec, out, model_info, like_path = job.spec, job.dir, job.inputs["model"], job.inputs["like"]
    info = read_model_info(model_info)
    kept, total = masks.counts(load_mask(like_path, info))
    width = models.small_dense_width(info, kept)
    model = models.from_info(info, spec["settings"]["seed"], spec["settings"].get("init", {}).get("std_scale", 1.0),
                             width=width)
    ptfile.save(out / "weights.pt", {k: v.numpy() for k, v in model.state_dict().items()})
    own = {"settings": info["settings"]} if "settings" in info else {}  # the lottery's model settings
    write_json(out / "model.json", models.describe(info["name"], model, width=width, reference_weights=total, **own))
    log(f"smalldense {spec['id']} level {spec['level']}: width {width:.4f}, "
        f"{models.prunable_count(model)} weights for a mask of {kept}")


register(StageKind("smalldense", 1, run, {"weights": "weights.pt", "model": "model.json"},
                   consumes=("init.std_scale",)))
