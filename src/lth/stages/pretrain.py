"""`pretrain`: pretraining on restricted information (Frankle, Schwab & Morcos, ICLR 2020,
§6): instead of rewinding IMP to theta_k of the normal training, the network is first
trained `pretrain.length` on a restricted version of the task (lth.nn.restricted): random
labels (fixed per example, seeded), self-supervised rotation (each image turned by 90·n
degrees, the network predicts n), blurred images (downsampled `blur_factor` times and
upsampled back), or rotation of the blurred images. The pretrained state is then the
lottery's start: the dense network trains from it and IMP rewinds to it. With
`pretrain.sparse` the subnetwork itself is pretrained instead: theta_0 ⊙ m of each level's
IMP mask, pretrained with its mask, then trained (the variant `sparse_pretrained`).

The rotation head: a rotation task trains the first four outputs of the task's own head
(the model keeps its shape; the other outputs stay in the softmax and learn not to fire);
after pretraining the whole output layer (weights and bias) is reset to theta_0's, so the
normal training gets a fresh task head on the pretrained body. Augmentation (flips) is off
while pretraining on rotations: a mirrored image turned by 90 degrees looks like another
turn. The recipe is the lottery's (optimizer, rate, batch size, data order); evaluation on
the restricted validation and test splits."""
from __future__ import annotations

from lth.plan import steps
from lth.plan.ids import Stage, consumed
from lth.plan.registry import StageKind, register
from lth.stages import log
from lth.stages.train import DATA, RECIPE

VARIANT = "sparse_pretrained"
TASKS = ("none", "random_labels", "rotation", "blur", "rotation_blur")
_STEP = steps.schema()
CONFIG = {"pretrain": {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "pretraining on restricted information before IMP (the early-phase paper, §6)",
    "properties": {
        "task": {"x-unordered": True, "default": "none",
                 "anyOf": [{"type": "string", "enum": list(TASKS)},
                           {"type": "array", "minItems": 1, "uniqueItems": True,
                            "items": {"type": "string", "enum": list(TASKS)}}],
                 "description": "none (no pretraining), random_labels, rotation, blur or rotation_blur, or a list "
                                "of them: one lottery each"},
        "length": {"x-unordered": True, "default": "2ep",
                   "anyOf": [_STEP, {"type": "array", "minItems": 1, "maxItems": 100, "uniqueItems": True,
                                     "items": _STEP}],
                   "description": "how long to pretrain: iterations or a string like 2ep, or a list: one lottery each"},
        "sparse": {"type": "boolean", "default": False,
                   "description": "true: pretrain each level's subnetwork theta_0 ⊙ m (the variant sparse_pretrained, "
                                  "beside the ticket) instead of the dense network"},
        "blur_factor": {"type": "integer", "minimum": 2, "maximum": 64, "default": 4,
                        "description": "an integer in [2, 64] dividing the image size: the blur's downsampling"},
        "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295, "default": 0,
                 "description": "seed of the random labels and of the rotations"},
    }}}


def wanted(cfg: dict) -> bool:
    return cfg["pretrain"]["task"] != "none"


def plan(cfg: dict, level: int, start: Stage, inputs: dict, origin: str, make, variant: str | None = None) -> Stage:
    """A pretraining from `start` (its inputs: model, start and, for a subnetwork, mask);
    `origin`: theta_0's weights file, whose output layer a rotation task puts back."""
    settings = consumed("pretrain", cfg)
    return make("pretrain", level, {"start": start.id}, {**inputs, "origin": origin}, settings, variant=variant)


def run(job) -> dict:
    import torch

    from lth.nn import devices, models, restricted
    from lth.nn.training import train
    from lth.store import ptfile
    from lth.store.starts import load_start
    from lth.store.weights import load_mask, load_weights, masked, read_model_info
    from lth.stages.train import write_metrics
    spec, out, ex = job.spec, job.dir, job.execution
    ps = spec["settings"]["pretrain"]
    info = read_model_info(job.inputs["model"])
    state = load_start(job.inputs["start"], info)
    mask = load_mask(job.inputs["mask"], info) if "mask" in job.inputs else None
    device, lease = job.start_torch(spec["settings"]["train"].get("precision", "fp32"))
    log(f"pretrain {spec['id']}: {ps['task']} for {ps['length']} on {devices.describe(device, lease)}")
    classes = info["tensors"][info["output_layer"]][0]
    splits = {name: restricted.restrict(split, ps["task"], ps["seed"], classes, ps["blur_factor"])
              for name, split in job.splits(info, device).items()}
    rotation = ps["task"] in restricted.HEAD_CLASSES
    settings = {**spec["settings"]["train"], "iterations": ps["length"], "eval_every": ps["length"],
                "divergence_factor": ex.divergence_factor, **({"augment": False} if rotation else {})}
    model = models.from_info(info, dropout=settings.get("dropout", 0.0))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.to(device)
    result = train(model, mask, splits, settings, log=lambda line: log(f"pretrain {spec['id']}: {line}"),
                   stop=job.stop)
    weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    if rotation:  # a fresh task head on the pretrained body: theta_0's output layer (module docstring)
        origin = load_weights(job.inputs["origin"], info)
        head = info["output_layer"].rsplit(".", 1)[0]
        for name in (f"{head}.weight", f"{head}.bias"):
            if name in weights:
                weights[name] = origin[name].copy()
        if mask is not None:
            weights = masked(weights, mask)
    ptfile.save(out / "weights.pt", weights, masks=mask)
    write_metrics(out / "metrics.parquet", result.metrics)
    final = [r for r in result.metrics if r["split"] == "test"][-1]
    log(f"pretrain {spec['id']}: restricted test accuracy {final['accuracy']:.4f} after {ps['length']}"
        + ("; output layer reset to theta_0's" if rotation else ""))
    return {"restricted_test_accuracy": final["accuracy"]}


register(StageKind("pretrain", 1, run, {"weights": "weights.pt", "metrics": "metrics.parquet"},
                   consumes=DATA + RECIPE + ("pretrain.task", "pretrain.length", "pretrain.blur_factor",
                                             "pretrain.seed"),
                   resources="train", config=CONFIG))
