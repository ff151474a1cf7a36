"""Training stages: `train` (a level's network, a control's, an instability copy) and
`snapshot` (theta_k: the dense recipe's first k iterations from theta_0, the rewind point of
late resetting). The runner trains from the stage's start (lth.store.starts), masked when
the level has a mask, and writes the weights (packed when masked), the metrics and stats."""
from __future__ import annotations

import time
from pathlib import PurePosixPath

from lth.plan.ids import Stage, consumed, lottery_of
from lth.plan.registry import StageKind, register
from lth.stages import log

# The keys a training consumes. The snapshot (theta_k) trains the same recipe's first k
# iterations, so the length and evaluation interval are not its business.
DATA = ("data.dataset", "data.validation_size", "data.split_seed")
RECIPE = ("train.optimizer", "train.lr", "train.momentum", "train.weight_decay", "train.batch_size",
          "train.seed", "train.warmup", "train.milestones", "train.gamma", "train.dropout", "train.augment",
          "train.precision")
TRAIN = DATA + RECIPE + ("train.iterations", "train.eval_every")
# controls whose network starts from a fresh draw: their start is their theta_0 (telemetry)
FRESH_INIT = ("random_reinit", "small_dense")


def plan(cfg: dict, level: int, start: Stage, inputs: dict, make, variant: str, rewound: bool = True) -> Stage:
    """A training of the lottery's recipe from `start` (its inputs: model, start and, for a
    masked level, mask). The rewind point is consumed by trainings that resume at k
    (`rewound`); at its default (reset) it drops out of the hash, so reset lotteries keep
    their IDs. Controls trained from iteration 0 (random reinit, small dense) do not."""
    dense_lr = cfg["train"]["dense_lr"] if level == 0 else None
    if dense_lr is not None:  # hashed as its train.lr: one dense run for every ticket rate
        cfg = dense_recipe(cfg)
    extra = {"rewind": {"to": cfg["rewind"]["to"]}} if rewound else {}  # the point; reset_at_end adds stages
    if level in cfg["telemetry"]["levels"]:  # hashed only when on: the IDs of trainings without it hold
        extra["telemetry"] = {k: v for k, v in cfg["telemetry"].items() if k != "levels"}
        if variant not in FRESH_INIT:  # theta_0 is the lottery's initialisation, beside the model description
            inputs = {**inputs, "origin": str(PurePosixPath(inputs["model"]).with_name("weights.pt"))}
    if level in cfg["trajectory"]["levels"] and variant == "ticket":  # weights at chosen points (trajectory)
        extra["trajectory"] = {"every": cfg["trajectory"]["every"], "points": cfg["trajectory"]["points"]}
    settings = consumed("train", cfg, **extra)
    lottery = None if dense_lr is None else {**lottery_of("train", settings, [start.lottery]), "train.dense_lr": dense_lr}
    return make("train", level, {"start": start.id}, inputs, settings, variant=variant, lottery=lottery)


def dense_recipe(cfg: dict) -> dict:
    """The dense pretraining's recipe: train.lr replaced by train.dense_lr where that is set
    (Ma et al. 2021 Table 4: pretraining and ticket learning rates apart). The dense run and
    its snapshots theta_k then hash exactly as a lottery whose train.lr is that rate."""
    lr = cfg["train"]["dense_lr"]
    return cfg if lr is None else {**cfg, "train": {**cfg["train"], "lr": lr}}


def snapshot(cfg: dict, init: Stage, at: str, make, model: str | None = None) -> Stage:
    """theta_k: the dense recipe's first k iterations from theta_0 (or from the pretrained
    state: `init` is then a pretrain stage and `model` the lottery's model.json). One stage
    per k, shared by every lottery rewinding to k and by the instability sweep of the dense
    network."""
    return make("snapshot", 0, {"start": init.id},
                {"model": model or init.output("model"), "start": init.output("weights")},
                consumed("snapshot", dense_recipe(cfg), at=at))


def start_iteration(spec: dict, steps_per_epoch: int) -> int:
    """Rewound levels resume at the rewind point k; level 0 and reset levels start at 0, and
    so do instability copies with the schedule reset (LMC Fig. 4: theta_k trained T steps)."""
    from lth.plan.steps import Step
    if spec["settings"].get("schedule") == "reset":
        return 0
    point = spec["settings"].get("rewind", {}).get("to", "reset")
    return 0 if point in ("reset", "continue") else Step.parse(point).iterations(steps_per_epoch)


def run(job) -> dict | None:
    """A training (or, for a snapshot, the dense recipe's first k iterations)."""
    import torch

    from lth.nn import checkpoint, data, devices, models, numerics
    from lth.nn.training import train
    from lth.plan.steps import Step, epoch_steps
    from lth.store import ptfile
    from lth.store.artifacts import write_json
    from lth.store.starts import load_start
    from lth.store.weights import check_masked, load_mask, read_model_info, weight_counts
    spec, out, ex = job.spec, job.dir, job.execution
    model_info, start, mask_path = job.inputs["model"], job.inputs["start"], job.inputs.get("mask")
    began = time.perf_counter()
    device, lease = job.start_torch(job.settings["train"].get("precision", "fp32"))
    log(f"{spec['kind']} {spec['id']}: {devices.describe(device, lease)}")
    # the divergence factor judges the result without changing it: an execution setting
    settings = {**spec["settings"], "train": {**spec["settings"]["train"], "divergence_factor": ex.divergence_factor}}
    if spec["kind"] == "snapshot":  # the dense run's first k iterations: theta_k
        settings = {**settings, "train": {**settings["train"], "iterations": settings["at"],
                                          "eval_every": settings["at"]}}
    info = read_model_info(model_info)
    state = load_start(start, info)  # a rewind's reference: its weights file masked here
    mask = None
    if mask_path is not None:
        mask = load_mask(mask_path, info)
        check_masked(start, state, mask, mask_path)
    splits = job.splits(info, device)
    model = models.from_info(info, dropout=settings["train"].get("dropout", 0.0))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.to(device)
    kept, total = weight_counts(info, mask)
    total = info.get("reference_weights", total)  # a small dense baseline counts against the full model
    log(f"train {spec['id']} level {spec['level']}: {kept}/{total} weights "
        f"({100 * kept / total:.1f}%), {settings['train']['iterations']} on {device}")
    per_epoch = epoch_steps(len(splits["train"]), settings["train"]["batch_size"])
    first = start_iteration(spec, per_epoch)
    last = Step.parse(settings["train"]["iterations"]).iterations(per_epoch)
    if spec["kind"] == "train" and first >= last:  # the config check prevents this; the data may differ
        raise data.DataError(f"train {spec['id']}: starts at iteration {first} (rewind point "
                             f"{settings['rewind']['to']}) but trains only to {last}; rewind to an earlier step")
    # the steps in iterations with this dataset, recorded in spec.json (lth.runtime.job)
    job.resolved.update({"steps_per_epoch": per_epoch, "start_iteration": first, "iterations": last})
    every, seconds = checkpoint.parse_interval(ex.checkpoint_every, per_epoch)
    ckpt = checkpoint.Checkpointing(job.checkpoint, every, spec["id"], seconds)
    watch = watcher(job, model, info, mask, state, splits, first, last, per_epoch, ckpt)
    capture = trajectory_points(settings.get("trajectory"), first, last, per_epoch)
    job.cooperate()  # from here a gone snakemake stops the loop at its next step, checkpoint saved
    try:
        result = train(model, mask, splits, settings["train"], start=first, checkpointing=ckpt, stop=job.stop,
                       log=lambda line: log(f"{spec['kind']} {spec['id']}: {line}"), watch=watch, capture=capture)
    except RuntimeError as exc:  # torch refusing a non-deterministic operation: one line
        raise numerics.explain(exc) or exc
    if watch is not None:
        from lth.nn import telemetry
        telemetry.write(out / TELEMETRY, watch.finish())
        job.extra["telemetry"] = TELEMETRY
    if capture:
        write_trajectory(out / TRAJECTORY, result.snapshots, mask, info["prunable"])
        job.extra["trajectory"] = TRAJECTORY
        log(f"train {spec['id']}: {len(capture)} trajectory points, {(out / TRAJECTORY).stat().st_size / 1e6:.2f} MB "
            f"({(out / TRAJECTORY).stat().st_size / len(capture) / 1e6:.3f} MB a point, packed)")

    # a masked training's pruned weights are not stored: packed (ptfile.save)
    ptfile.save(out / "weights.pt", {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()},
                masks=mask)
    figures = None
    if spec["kind"] != "snapshot":
        write_metrics(out / "metrics.parquet", result.metrics)
        stats = {
            "level": spec["level"], "weights_kept": kept, "weights_total": total,
            "iterations": result.iterations, "train_seconds": round(result.train_seconds, 3),
            "eval_seconds": round(result.eval_seconds, 3),
            "job_seconds": round(time.perf_counter() - began, 3),
            "threads": torch.get_num_threads(), "device": device, "start_iteration": first,
            "device_info": numerics.device_info(device), "deterministic": ex.deterministic,
            "divergence_factor": ex.divergence_factor,
            **({"telemetry_seconds": round(result.telemetry_seconds, 3)} if watch is not None else {}),
        }
        write_json(out / "stats.json", stats)
        figures = key_figures(result.metrics, stats)
    checkpoint.remove(ckpt)  # only now: every output is in place
    return figures


TELEMETRY = "telemetry.parquet"  # beside the outputs when the training records telemetry (lth.nn.telemetry)
TRAJECTORY = "trajectory.pt"  # beside the outputs when it records its weights at chosen points


def trajectory_points(settings: dict | None, first: int, last: int, per_epoch: int) -> tuple:
    """The iterations whose weights a training records (trajectory.every and .points, in
    iterations, within its own first..last), its start and its end included; () when none."""
    if settings is None:
        return ()
    from lth.plan.steps import Step
    every = max(1, Step.parse(settings["every"]).iterations(per_epoch))
    chosen = {first, last, *range(first, last, every)}
    chosen |= {k for k in (Step.parse(p).iterations(per_epoch) for p in settings["points"]) if first <= k <= last}
    return tuple(sorted(chosen))


def write_trajectory(path, snapshots: dict, mask: dict | None, prunable: list) -> None:
    """The captured weights, one "<iteration>/<tensor>" entry per point and tensor, the masked
    tensors packed (lth.store.ptfile): a point costs the survivors, not the dense size."""
    from lth.store import ptfile
    state, masks = {}, {}
    for iteration in sorted(snapshots):
        for name, tensor in snapshots[iteration].items():
            state[f"{iteration}/{name}"] = tensor.detach().cpu().numpy()
            if mask is not None and name in mask:
                masks[f"{iteration}/{name}"] = mask[name]
    ptfile.save(path, state, masks=masks or None)


def read_trajectory(path) -> dict:
    """{iteration: {tensor: numpy array}} of a training's trajectory.pt (dense arrays)."""
    from lth.store import ptfile
    out: dict = {}
    for key, array in ptfile.load(path).items():
        iteration, _, name = key.partition("/")
        out.setdefault(int(iteration), {})[name] = array
    return dict(sorted(out.items()))


def watcher(job, model, info, mask, start, splits, first, last, per_epoch, ckpt):
    """The training's telemetry (lth.nn.telemetry.Watch), or None when it records none."""
    settings = job.settings.get("telemetry")
    if settings is None:
        return None
    from lth.nn import telemetry
    from lth.store.weights import load_weights
    origin = load_weights(job.inputs["origin"], info) if "origin" in job.inputs else start
    points = telemetry.points(settings, first, last, per_epoch)
    watch = telemetry.Watch(model, info["prunable"], mask, origin, start, settings, splits, points,
                            ckpt.path.with_suffix(".telemetry"), job.settings["train"].get("precision", "fp32"))
    log(f"train {job.spec['id']}: telemetry at {len(points)} points, "
        f"{4 * sum(watch.sizes) * len(points) / 1e6:.1f} MB kept until the end")
    return watch


def key_figures(rows: list, stats: dict) -> dict:
    """A training's numbers for its record (and so the catalog), as the summary reads them."""
    import pandas as pd

    from lth.report.summary import level_row
    row = level_row({"label": ""}, "", stats["level"], "", pd.DataFrame(rows), stats)
    keys = ("weights_remaining_pct", "early_stop_iteration", "early_stop_test_accuracy", "final_iteration",
            "final_test_accuracy", "final_train_accuracy")
    return {key: row[key] for key in keys}


def write_metrics(path, rows: list) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lth.store.artifacts import atomic_path
    table = pa.table({
        "iteration": pa.array([r["iteration"] for r in rows], type=pa.int64()),
        "split": pa.array([r["split"] for r in rows], type=pa.string()),
        "loss": pa.array([r["loss"] for r in rows], type=pa.float64()),
        "accuracy": pa.array([r["accuracy"] for r in rows], type=pa.float64()),
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


register(StageKind("train", 1, run, {"weights": "weights.pt", "metrics": "metrics.parquet", "stats": "stats.json"},
                   consumes=TRAIN, resources="train"))
register(StageKind("snapshot", 1, run, {"weights": "weights.pt"}, consumes=DATA + RECIPE, resources="train"))
