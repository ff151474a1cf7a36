"""`curvature`: the top eigenvalues of the training loss's Hessian through training (the
early-phase background: a few large eigenvalues emerge, the bulk goes to zero, negative
ones shrink), at the points where a training recorded its weights (`trajectory.levels`,
`trajectory.every`, `trajectory.points`): the dense network and the tickets alike.

At each point: the `k` largest eigenvalues and the most negative one of the Hessian of the
mean cross-entropy on a fixed seeded subset of `examples` training examples, with respect to
every trainable parameter a subnetwork has (pruned weights are not coordinates), by Lanczos
with full reorthogonalisation on Hessian-vector products (lth.nn.curvature), stopped when
each of the k largest Ritz values is within `tolerance` (relative) of an eigenvalue and the
most negative within `tolerance` x the largest, or at `max_iterations`; the model in eval
mode (BatchNorm's running statistics, no dropout). Version 2: the most negative joined the
stopping rule (version 1 stopped on the largest alone and left it 5-15 % short)."""
from __future__ import annotations

from lth.plan.ids import Plan, Stage, consumed
from lth.plan.registry import Figure, StageKind, register
from lth.stages import log
from lth.stages.train import DATA

CONFIG = {"curvature": {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "Hessian eigenvalues at the points the trajectory trainings record",
    "properties": {
        "enabled": {"type": "boolean", "default": False,
                    "description": "true or false: compute them (needs trajectory.levels)"},
        "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5,
              "description": "an integer in [1, 50]: how many of the largest eigenvalues"},
        "examples": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 1000,
                     "description": "training examples in the loss whose Hessian is taken (a fixed seeded subset)"},
        "tolerance": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.001,
                      "description": "a number in (0, 1]: Lanczos stops when every one of the k largest Ritz values "
                                     "is within this relative tolerance of an eigenvalue, and the most negative "
                                     "within it times the largest"},
        "max_iterations": {"type": "integer", "minimum": 2, "maximum": 1000, "default": 100,
                           "description": "an integer in [2, 1000]: Lanczos steps at most (not converged: said so)"},
        "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295, "default": 0,
                 "description": "seed of the subset and of Lanczos' start vector"},
    }}}
COLUMNS = ["network", "train", "iteration", "rank", "eigenvalue", "residual", "lanczos_iterations", "converged"]


def plan(cfg: dict, plan: Plan, make) -> Stage | None:
    if not cfg["curvature"]["enabled"]:
        return None
    recorded = [entry for stage in plan.finals.get("trajectory", []) for entry in stage.layout["trains"]]
    if not recorded:
        return None
    inputs = {k: v for s in plan.finals["trajectory"] for k, v in s.inputs.items()}
    return make("curvature", None, None, inputs, consumed("curvature", cfg), layout={"trains": recorded})


def run(job) -> dict:
    import pandas as pd
    import torch

    from lth.nn import curvature, devices, models
    from lth.report.summary import remaining_pct
    from lth.runtime.lifeline import check
    from lth.stages import by_training
    from lth.stages.train import TRAJECTORY, read_trajectory
    from lth.store.artifacts import atomic_path, read_json
    from lth.store.records import verify
    from lth.store.weights import load_mask, read_model_info
    spec, out = job.spec, job.dir
    cs = spec["settings"]["curvature"]
    paths = by_training(job.inputs)
    device, lease = job.start_torch("fp32")
    log(f"curvature {spec['id']}: top {cs['k']} on {cs['examples']} examples, {devices.describe(device, lease)}")
    job.cooperate()
    rows, sample = [], None
    for entry in spec["layout"]["trains"]:
        files = paths[entry["train"]]
        info = read_model_info(files["model"])
        if sample is None:
            sample = curvature.subset(job.splits(info, device, batch_size=1)["train"], cs["examples"], cs["seed"])
        recorded = files["stats"].parent / TRAJECTORY
        verify([recorded])
        mask = load_mask(files["mask"], info) if "mask" in files else None
        title = f"{entry['run']}, level {entry['level']} ({remaining_pct(read_json(files['stats'])):.1f} %)"
        model = models.from_info(info).to(device)
        for iteration, weights in read_trajectory(recorded).items():
            check(job.stop, f"iteration {iteration} of {title}")  # a gone snakemake stops here
            with torch.no_grad():
                model.load_state_dict({k: torch.from_numpy(v).to(device) for k, v in weights.items()})
            found = curvature.top_eigenvalues(model, mask, sample, cs["k"], cs["tolerance"], cs["max_iterations"],
                                              cs["seed"])
            values = [(r, v, res) for r, (v, res) in enumerate(zip(found["largest"], found["residuals"]["largest"]),
                                                                start=1)]
            values.append((0, found["smallest"], found["residuals"]["smallest"]))  # rank 0: the most negative
            rows += [{"network": title, "train": entry["train"], "iteration": iteration, "rank": r, "eigenvalue": v,
                      "residual": res, "lanczos_iterations": found["iterations"], "converged": found["converged"]}
                     for r, v, res in values]
            log(f"curvature {title} iteration {iteration}: top {found['largest'][0]:.4g}, smallest "
                f"{found['smallest']:.4g} ({found['iterations']} Lanczos steps"
                + ("" if found["converged"] else ", not converged") + ")")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    with atomic_path(out / "curvature.csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    plot(frame, out / "curvature.png")
    return {"points": int(frame[["train", "iteration"]].drop_duplicates().shape[0])}


def plot(frame, path) -> None:
    """One panel per network: the k largest eigenvalues (solid, darker = larger) and the most
    negative one (dashed) against the iteration, on a symmetric log scale; a value of a point
    where Lanczos stopped at max_iterations is crossed."""
    from lth.report.plots import _figure, _save
    networks = list(dict.fromkeys(frame.network)) or [""]
    plt, fig, axes = _figure(1, len(networks), figsize=(5 * len(networks), 4), squeeze=False, sharey=True)
    for ax, network in zip(axes[0], networks):
        mine = frame[frame.network == network]
        ranks = sorted(r for r in mine["rank"].unique() if r > 0)
        for rank in ranks:
            rows = mine[mine["rank"] == rank]
            ax.plot(rows.iteration, rows.eigenvalue, "-o", markersize=3, color=plt.cm.viridis(0.85 * (rank - 1)
                    / max(len(ranks) - 1, 1)), label=f"lambda_{rank}")
        lowest = mine[mine["rank"] == 0]
        ax.plot(lowest.iteration, lowest.eigenvalue, "--", color="C3", label="most negative")
        short = mine[~mine.converged.astype(bool)]  # Lanczos hit max_iterations: the residual column says how far
        if len(short):
            ax.plot(short.iteration, short.eigenvalue, "x", color="black", markersize=6, label="not converged")
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_xlabel("iteration")
        ax.set_title(network, fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("Hessian eigenvalue (training loss)")
    axes[0][0].legend(fontsize=7)
    _save(plt, fig, path)


register(StageKind(
    "curvature", 2, run, {"table": "curvature.csv", "plot": "curvature.png"},
    consumes=DATA + ("curvature.k", "curvature.examples", "curvature.tolerance", "curvature.max_iterations",
                     "curvature.seed"),
    resources="train", plan=plan, needs=("trajectory",), config=CONFIG,
    figures={"plot": Figure("curvature.rst", "Loss landscape", "Hessian eigenvalues through training")},
    announce="curvature: {dir}"))
