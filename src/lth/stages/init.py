"""`init`: theta_0, a declared model (lth.plan.models) drawn from `init.seed`, and its
description (model.json: tensor names and shapes, prunable tensors, output layer) that
every later stage of the lottery reads instead of building the model."""
from __future__ import annotations

from lth.plan.ids import Stage, consumed
from lth.plan.registry import StageKind, register
from lth.stages import log


def plan(cfg: dict, make) -> Stage:
    return make("init", None, {}, {}, consumed("init", cfg))


def run(job) -> None:
    from lth.nn import models  # torch
    from lth.store import ptfile
    from lth.store.artifacts import write_json
    spec, out, settings = job.spec, job.dir, job.settings
    model = models.build(settings["model"]["name"], settings["init"]["seed"],
                         settings["init"].get("std_scale", 1.0))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    ptfile.save(out / "weights.pt", state)
    write_json(out / "model.json", models.describe(settings["model"]["name"], model))
    log(f"init {spec['id']}: {settings['model']['name']} seed {settings['init']['seed']}")


register(StageKind("init", 1, run, {"weights": "weights.pt", "model": "model.json"},
                   consumes=("model.name", "init.seed", "init.std_scale")))
