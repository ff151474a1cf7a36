"""`init`: theta_0, a declared model (lth.plan.models) drawn from `init.seed`, and its
description (model.json: tensor names and shapes, prunable tensors, output layer) that
every later stage of the lottery reads instead of building the model."""
from __future__ import annotations

from lth.plan.ids import Stage, consumed
from lth.plan.registry import StageKind, register
from lth.stages import log


def plan(cfg: dict, make) -> Stage:
    """The model's own settings (model.<key>) and a dataset's number of classes other than
    10 are hashed only where they are set: the IDs of every earlier init hold."""
    from lth.nn import data
    from lth.plan import models
    settings = consumed("init", cfg)
    settings["model"].update(models.settings(cfg))
    classes = data.source(cfg["data"]["dataset"]).num_classes
    if classes != 10:
        settings["num_classes"] = classes
    return make("init", None, {}, {}, settings)


def run(job) -> None:
    from lth.nn import models  # torch
    from lth.store import ptfile
    from lth.store.artifacts import write_json
    spec, out, settings = job.spec, job.dir, job.settings
    own = {k: v for k, v in settings["model"].items() if k != "name"}  # off their defaults only
    model = models.build(settings["model"]["name"], settings["init"]["seed"], settings["init"].get("std_scale", 1.0),
                         num_classes=settings.get("num_classes", 10), **own)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    ptfile.save(out / "weights.pt", state)
    write_json(out / "model.json", models.describe(settings["model"]["name"], model,
                                                   **({"settings": own} if own else {})))
    log(f"init {spec['id']}: {settings['model']['name']} seed {settings['init']['seed']}")


register(StageKind("init", 1, run, {"weights": "weights.pt", "model": "model.json"},
                   consumes=("model.name", "init.seed", "init.std_scale")))  # + the model's own settings (plan)
