"""`trajectory`: training trajectories on the loss surface (Li et al., NeurIPS 2018, §7; Ma et
al., NeurIPS 2021, Figs. 4-5): for every training that recorded its weights at chosen points
(`trajectory.levels`: the ticket and, at level 0, the dense network, of every lottery), the
top two PCA directions of its weight differences to its final weights, the trajectory
projected on them and the training loss on a grid over that plane through the final
weights; all networks side by side on one colour scale (lth.report.trajectory).

The weight vector is the model's prunable tensors (the conv and linear weights the
landscape stage perturbs too), their surviving entries for a subnetwork: a masked training
keeps its pruned weights at 0, so its directions are 0 there and the plane lies inside the
subnetwork. Biases, BatchNorm parameters and running statistics stay at the final
network's values over the whole plane (landscape's convention), so the grid point (0, 0) is
the final network exactly and its loss the final loss. The loss is the mean cross-entropy
on a fixed seeded subset of the training split (`trajectory.examples`, landscape's draw)."""
from __future__ import annotations

from lth.plan import steps
from lth.plan.ids import Plan, Stage, consumed
from lth.plan.registry import Figure, StageKind, register
from lth.stages import log
from lth.stages.train import DATA

_STEP = steps.schema(minimum=0)
CONFIG = {"trajectory": {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "training trajectories on the loss surface (Li et al. 2018 §7, Ma et al. 2021 Figs. 4-5)",
    "properties": {
        "levels": {"type": "array", "maxItems": 101, "uniqueItems": True,
                   "items": {"type": "integer", "minimum": 0, "maximum": 100}, "default": [],
                   "description": "levels whose ticket trainings (level 0: the dense network) record their weights "
                                  "at the points below, in every lottery; [] records none (off)"},
        "every": {**_STEP, "minimum": 1, "default": "1ep",
                  "description": "record the weights every so many steps (its start and end always): iterations "
                                 "or a string like 500it or 1ep"},
        "points": {"type": "array", "maxItems": 1000, "uniqueItems": True, "items": _STEP, "default": [],
                   "description": "more points to record (the early phase, say: [100it, 200it, 500it])"},
        "grid": {"type": "integer", "minimum": 3, "maximum": 201, "default": 21,
                 "description": "an integer in [3, 201]: grid points per axis of the plane"},
        "margin": {"type": "number", "minimum": 0, "maximum": 10, "default": 0.2,
                   "description": "a number in [0, 10]: how far the plane reaches past the trajectory, relative "
                                  "to its extent"},
        "examples": {"type": "integer", "minimum": 1, "maximum": 10000000, "default": 2000,
                     "description": "training examples the loss on the plane averages over (a fixed seeded subset)"},
        "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295, "default": 0,
                 "description": "seed of that subset"},
    }}}


def plan(cfg: dict, plan: Plan, make) -> Stage | None:
    """One stage over every recording training of every lottery; none when off."""
    recorded = []
    for run in plan.runs if cfg["trajectory"]["levels"] else []:
        for level, stages in enumerate(run.levels):
            stage = stages["train"]
            if "trajectory" in stage.settings and stage.id not in {r["train"] for r in recorded}:
                recorded.append({"run": run.label, "level": level, "train": stage.id, "stage": stage})
    if not recorded:
        return None
    inputs = {}
    for r in recorded:
        stage = r.pop("stage")
        inputs[f"{stage.id}_stats"] = stage.output("stats")
        inputs[f"{stage.id}_model"] = stage.inputs["model"]
        if "mask" in stage.inputs:
            inputs[f"{stage.id}_mask"] = stage.inputs["mask"]
    return make("trajectory", None, None, inputs, consumed("trajectory", cfg), layout={"trains": recorded})


def flatten(weights: dict, names: list, mask: dict | None):
    """The trajectory's vector: the prunable tensors' surviving entries, in model order."""
    import numpy as np
    return np.concatenate([weights[n][mask[n]] if mask is not None else weights[n].ravel() for n in names])


def unflatten(vector, like: dict, names: list, mask: dict | None) -> dict:
    """A direction as tensors shaped like `like` (zero where the vector has no entry)."""
    import numpy as np
    out, at = {}, 0
    for name, value in like.items():
        direction = np.zeros_like(value, dtype=np.float32)
        if name in names:
            keep = mask[name] if mask is not None else np.ones(value.shape, dtype=bool)
            count = int(keep.sum())
            direction[keep] = vector[at:at + count]
            at += count
        out[name] = direction
    return out


def run(job) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    from lth.nn import devices, models
    from lth.nn.training import Split
    from lth.report import trajectory
    from lth.report.summary import remaining_pct
    from lth.stages import by_training
    from lth.stages.landscape import evaluate_grid, subset_indices
    from lth.stages.train import TRAJECTORY, read_trajectory
    from lth.store.artifacts import atomic_path, read_json
    from lth.store.records import verify
    from lth.store.weights import load_mask, read_model_info
    spec, out = job.spec, job.dir
    ts = spec["settings"]["trajectory"]
    precision = spec["settings"].get("train", {}).get("precision", "fp32")
    paths = by_training(job.inputs)
    device, lease = job.start_torch(precision)
    subset = None
    frames, rows, points = [], [], []
    log(f"trajectory {spec['id']}: {len(spec['layout']['trains'])} networks on {devices.describe(device, lease)}")
    job.cooperate()
    for entry in spec["layout"]["trains"]:
        files = paths[entry["train"]]
        info = read_model_info(files["model"])
        if subset is None:  # one dataset for all: the first network's checks it against its model
            train = job.splits(info, device, batch_size=1)["train"]
            chosen = torch.from_numpy(subset_indices(len(train), ts["examples"], ts["seed"])).to(train.x.device)
            subset = Split(train.x[chosen], train.y[chosen])
        recorded = files["stats"].parent / TRAJECTORY
        verify([recorded])  # in the training's record, not a Snakemake output: checked here
        snapshots = read_trajectory(recorded)
        mask = load_mask(files["mask"], info) if "mask" in files else None
        names = info["prunable"]
        iterations = list(snapshots)
        stacked = np.stack([flatten(snapshots[i], names, mask).astype(np.float64) for i in iterations])
        pca = trajectory.pca_directions(stacked)
        alphas, betas = trajectory.plane(pca["coords"], ts["grid"], ts["margin"])
        final = snapshots[iterations[-1]]
        d1, d2 = (unflatten(pca["directions"][i], final, names, mask) for i in (0, 1))
        model = models.from_info(info).to(device)
        grid = evaluate_grid(model, final, d1, d2, alphas, subset, precision, job.stop, betas=betas)
        pct = remaining_pct(read_json(files["stats"]))
        title = f"{entry['run']}, level {entry['level']} ({pct:.1f} %)"
        frame = pd.DataFrame(grid)
        frames.append((title, frame, pca["coords"], tuple(pca["explained"])))
        rows += [{"network": title, "train": entry["train"], **r} for r in grid]
        points += [{"network": title, "train": entry["train"], "iteration": it, "pc1": c[0], "pc2": c[1],
                    "explained1": pca["explained"][0], "explained2": pca["explained"][1]}
                   for it, c in zip(iterations, pca["coords"])]
        centre = frame.loc[(frame.alpha == 0) & (frame.beta == 0), "loss"].iloc[0]
        log(f"trajectory {title}: {len(iterations)} points, PCA explains {100 * pca['explained'][0]:.1f} % + "
            f"{100 * pca['explained'][1]:.1f} %; loss at the final weights {centre:.4f}, "
            f"{ts['grid']}x{ts['grid']} grid alpha [{alphas[0]:.3g}, {alphas[-1]:.3g}] beta [{betas[0]:.3g}, {betas[-1]:.3g}]")
    with atomic_path(out / "grid.parquet") as tmp:
        pd.DataFrame(rows).to_parquet(tmp, index=False)
    with atomic_path(out / "points.csv") as tmp:
        pd.DataFrame(points).to_csv(tmp, index=False, float_format="%.6g")
    trajectory.plot(frames, out / "trajectory.png")
    return {"networks": len(frames)}


register(StageKind(
    "trajectory", 1, run, {"table": "grid.parquet", "points": "points.csv", "plot": "trajectory.png"},
    consumes=DATA + ("train.precision", "trajectory.grid", "trajectory.margin", "trajectory.examples",
                     "trajectory.seed"),
    resources="train", plan=plan, config=CONFIG, needs=(),
    figures={"plot": Figure("trajectory.rst", "Loss landscape", "training trajectories on the loss contours")},
    announce="trajectories: {dir}"))
