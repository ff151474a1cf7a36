"""The loss landscape around a trained network on a 2-D slice (Li, Xu, Taylor, Studer &
Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018), for the dense
network and chosen pruning levels of each lottery, side by side.

The slice: two random directions d1, d2 in weight space and the grid

    L(alpha, beta) = loss(W + alpha * d1 + beta * d2),  alpha, beta in [-span, span]

(`grid` evenly spaced values each, symmetric about 0: the centre is W itself, exactly).

Directions, filter-normalised (Li et al., section 4):
- one Gaussian direction per perturbed tensor, d ~ N(0, 1), then each slice along the
  output dimension scaled to the weight's own norm: d_i <- d_i * ||W_i|| / ||d_i||, where a
  slice is one output filter of a conv weight (out, in, kh, kw) and one output unit's
  incoming weights (a row) of a linear weight (out, in);
- only conv and linear weights are perturbed (the model's prunable tensors); biases and
  BatchNorm parameters and buffers get a zero direction (the paper's convention of ignoring
  them: "d is set to zero" for biases and BN, so they keep their trained values);
- a subnetwork's directions are restricted to its mask: multiplied by it before the
  normalisation, so they are zero at every pruned weight (the slice stays inside the
  subnetwork's weight space) and each slice's norm is the norm of the surviving weights of
  that filter/row; a filter or row with no survivor (or all-zero weights) gets a zero slice;
- the Gaussian draws come from `landscape.seed` alone, one stream per direction (numpy's
  SeedSequence([seed, 1]) and ([seed, 2]), tensors in the model's parameter order): every
  network of a lottery starts from the same draw, so a sparse level's direction is the dense
  one's draw restricted to its mask and renormalised, and dense and sparse panels differ by
  the networks, not by the luck of the draw.

The loss is the mean cross-entropy (and the accuracy) on a fixed training subset: the
`train_subset` examples of the training split (after the validation hold-out) chosen by a
seeded draw without replacement (stream SeedSequence([seed, 0]); all of the split when it is
smaller), the same for every network. The model is evaluated in eval mode: models with
BatchNorm use the running statistics stored with the trained weights at every grid point, as
Li et al. do; they are not recomputed (so the centre is the trained network exactly).

Outputs: grid.parquet (level, weights_remaining_pct, alpha, beta, loss, accuracy; grid x grid
rows per network), landscape.png (one contour panel per network, one shared colour scale,
the trained network marked at the centre) and surface.png (the same grids as 3-D surfaces,
as the loss-landscape paper shows the full and the pruned network).

Torch is imported only inside the functions that evaluate (the planner runs at the
Snakefile's parse time).
"""
from __future__ import annotations

import math
import time

import numpy as np

# Columns of grid.parquet, one row per (network, alpha, beta).
GRID_COLUMNS = ("level", "weights_remaining_pct", "alpha", "beta", "loss", "accuracy")
SUBSET_STREAM, DIRECTION_STREAMS = 0, (1, 2)


# ---- the slice ----

def coordinates(grid: int, span: float) -> np.ndarray:
    """`grid` evenly spaced values from -span to span, exactly symmetric about 0 (the middle
    one of an odd grid is exactly 0.0)."""
    if grid < 2:
        raise ValueError(f"need at least 2 grid points per axis, got {grid}")
    values = span * np.linspace(-1.0, 1.0, grid)
    return (values - values[::-1]) / 2  # x_i = -x_(n-1-i) bit for bit


def slice_norms(array: np.ndarray) -> np.ndarray:
    """Euclidean norm of each slice along the first (output) dimension: per filter of a conv
    weight, per row (output unit) of a linear weight."""
    flat = np.asarray(array, dtype=np.float64).reshape(array.shape[0], -1)
    return np.sqrt(np.einsum("ij,ij->i", flat, flat))


def normalise(direction: np.ndarray, weight: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """A direction restricted to `keep` (True = surviving weight; None = all) and scaled slice
    by slice to the weight's norms, as float64: d_i * ||W_i|| / ||d_i||, zero where ||d_i||
    or ||W_i|| is zero."""
    d = np.asarray(direction, dtype=np.float64)
    if keep is not None:
        d = np.where(keep, d, 0.0)
    w = np.where(keep, weight, 0) if keep is not None else weight
    d_norm, w_norm = slice_norms(d), slice_norms(w)
    scale = np.divide(w_norm, d_norm, out=np.zeros_like(w_norm), where=d_norm > 0)
    return d * scale.reshape((-1,) + (1,) * (d.ndim - 1))


def direction(weights: dict, perturbed: list, mask: dict | None, stream) -> dict:
    """One filter-normalised direction over every tensor of `weights` (name -> array): a
    Gaussian draw from `stream` (a numpy SeedSequence) for each tensor in `perturbed`, in
    that order, normalised to the weights and restricted to `mask` (name -> bool array;
    None or a tensor missing from it: not masked); zero for every other tensor. Each tensor
    keeps its weight's dtype."""
    rng = np.random.default_rng(stream)
    out = {name: np.zeros_like(value) for name, value in weights.items()}
    for name in perturbed:
        w = weights[name]
        draw = rng.standard_normal(w.shape)  # drawn for every tensor, masked or not: one stream for all levels
        keep = None if mask is None else mask.get(name)
        out[name] = normalise(draw, w, keep).astype(w.dtype)
    return out


def directions(weights: dict, perturbed: list, mask: dict | None, seed: int) -> tuple[dict, dict]:
    """The slice's two directions (d1 for alpha, d2 for beta) from `seed`."""
    return tuple(direction(weights, perturbed, mask, np.random.SeedSequence([seed, s]))  # type: ignore[return-value]
                 for s in DIRECTION_STREAMS)


def subset_indices(size: int, count: int, seed: int) -> np.ndarray:
    """`count` distinct positions of a split of `size` examples, sorted, from a seeded draw;
    every position when count >= size."""
    if count >= size:
        return np.arange(size)
    rng = np.random.default_rng(np.random.SeedSequence([seed, SUBSET_STREAM]))
    return np.sort(rng.choice(size, count, replace=False))


# ---- evaluation (torch) ----

def evaluate_grid(model, weights: dict, d1: dict, d2: dict, coords: np.ndarray, split,
                  precision: str = "fp32", stop=None, betas: np.ndarray | None = None) -> list[dict]:
    """Rows (alpha, beta, loss, accuracy) of L(W + alpha d1 + beta d2) for every alpha in
    `coords` and beta in `betas` (the same values when None; alpha outer), on `split`
    (lth.nn.training.Split), the model in eval mode. Only
    tensors with a nonzero direction change from point to point; the rest stay at W. The
    model is left holding W. `precision`: the trainings' arithmetic (lth.nn.numerics). `stop`:
    lth.runtime.job.StageJob.stop, asked at each row of the grid."""
    import torch

    from lth.runtime.lifeline import check
    from lth.nn.training import evaluate
    device = next(model.parameters()).device
    with torch.no_grad():
        model.load_state_dict({k: torch.from_numpy(v).to(device) for k, v in weights.items()})
    params = dict(model.named_parameters())
    moving = [name for name in weights if name in params and (d1[name].any() or d2[name].any())]
    base = {n: torch.from_numpy(weights[n]).to(device) for n in moving}
    one = {n: torch.from_numpy(d1[n]).to(device) for n in moving}
    two = {n: torch.from_numpy(d2[n]).to(device) for n in moving}
    rows = []
    for alpha in coords:
        check(stop, f"alpha {float(alpha):g} of the grid")
        for beta in coords if betas is None else betas:
            with torch.no_grad():
                for n in moving:  # W + alpha d1 + beta d2; at (0, 0) exactly W
                    params[n].copy_(base[n]).add_(one[n], alpha=float(alpha)).add_(two[n], alpha=float(beta))
            loss, accuracy = evaluate(model, split, precision=precision)
            rows.append({"alpha": float(alpha), "beta": float(beta), "loss": loss, "accuracy": accuracy})
    with torch.no_grad():
        for n in moving:
            params[n].copy_(base[n])
    return rows


# ---- plot ----

def plot(frame, path) -> None:
    """One filled contour panel of the loss per network (level), side by side, on one shared
    logarithmic colour scale and the same contour levels, the trained network (the centre)
    marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from lth.report.plots import _write, loss_colorbar, loss_contours, loss_scale
    networks = sorted(frame.level.unique())
    low, high = loss_scale(frame.loss)
    fig, axes = plt.subplots(1, len(networks), figsize=(4.2 * len(networks) + 1.2, 4.2), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    filled = None
    for ax, level in zip(axes[0], networks):
        rows = frame[frame.level == level]
        filled = loss_contours(ax, rows, low, high)
        centre = rows.loc[(rows.alpha.abs() + rows.beta.abs()).idxmin()]
        ax.plot(centre.alpha, centre.beta, marker="*", color="red", markersize=11, markeredgecolor="white",
                linestyle="none", label=f"trained: loss {centre.loss:.3g}")
        ax.set_title(f"level {level}: {rows.weights_remaining_pct.iloc[0]:.1f} % weights", fontsize=9)
        ax.set_xlabel("alpha (direction 1)")
        ax.xaxis.set_major_locator(MaxNLocator(5, symmetric=True))
        ax.yaxis.set_major_locator(MaxNLocator(5, symmetric=True))
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    axes[0][0].set_ylabel("beta (direction 2)")
    loss_colorbar(fig.colorbar(filled, ax=list(axes[0]), shrink=0.9), low, high)
    _write(plt, fig, path)


def plot_surface(frame, path) -> None:
    """One 3-D surface panel of log10 of the loss per network (level), side by side (the
    loss-landscape paper's surface plots), from the same grid.parquet frame as `plot`: one
    shared z range and colour scale over all panels (the finite losses' range; inf, NaN and
    out-of-range values drawn at its ends), the trained network (the centre) marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator

    from lth.report.plots import _write, loss_colorbar, loss_grid, loss_scale, loss_ticks
    networks = sorted(frame.level.unique())
    low, high = loss_scale(frame.loss)
    zlow, zhigh = math.log10(low), math.log10(high)
    norm = Normalize(vmin=zlow, vmax=zhigh)  # on log10 loss: the colours of LogNorm(low, high) on the loss
    ticks = loss_ticks(low, high)
    fig = plt.figure(figsize=(4.8 * len(networks) + 1.0, 4.4))
    axes = []
    for i, level in enumerate(networks):
        ax = fig.add_subplot(1, len(networks), i + 1, projection="3d", computed_zorder=False)
        axes.append(ax)
        rows = frame[frame.level == level]
        alphas, betas, z = loss_grid(rows, low, high)
        z = np.log10(z)
        x, y = np.meshgrid(alphas, betas)
        ax.plot_surface(x, y, z, cmap="viridis", norm=norm, rstride=1, cstride=1, linewidth=0.1,
                        edgecolor="none", antialiased=True, alpha=0.95, zorder=1)
        centre = rows.loc[(rows.alpha.abs() + rows.beta.abs()).idxmin()]
        zc = math.log10(min(max(float(centre.loss), low), high)) if np.isfinite(centre.loss) else zhigh
        ax.plot([centre.alpha, centre.alpha], [centre.beta, centre.beta], [zc, zhigh], color="red",
                linewidth=0.8, zorder=3)
        ax.scatter([centre.alpha], [centre.beta], [zc], marker="*", color="red", s=90, edgecolors="white",
                   depthshade=False, zorder=4, label=f"trained: loss {centre.loss:.3g}")
        ax.set_zlim(zlow, zhigh)
        ax.zaxis.set_major_locator(FixedLocator([math.log10(t) for t in ticks]))
        ax.zaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{10.0 ** v:.3g}"))
        ax.xaxis.set_major_locator(MaxNLocator(5, symmetric=True))
        ax.yaxis.set_major_locator(MaxNLocator(5, symmetric=True))
        ax.set_title(f"level {level}: {rows.weights_remaining_pct.iloc[0]:.1f} % weights", fontsize=9)
        ax.set_xlabel("alpha (direction 1)", fontsize=8)
        ax.set_ylabel("beta (direction 2)", fontsize=8)
        ax.set_zlabel("loss (log scale)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_box_aspect(None, zoom=0.88)  # room for the z label
        ax.view_init(elev=35, azim=-60)
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    fig.subplots_adjust(left=0.0, right=0.92, bottom=0.02, top=0.95, wspace=0.02)
    loss_colorbar(fig.colorbar(ScalarMappable(norm=LogNorm(vmin=low, vmax=high), cmap="viridis"), ax=axes,
                               shrink=0.7, pad=0.02, fraction=0.03), low, high)
    _write(plt, fig, path)


# ---- the stage ----

def plan(cfg: dict, plan, make) -> list | None:
    """One landscape stage per lottery over the trained weights (and masks) of the levels in
    `landscape.levels` that the lottery has (beyond `levels`: skipped; lth.plan.config.notes says
    so); none when the list is empty."""
    from lth.plan.ids import consumed
    wanted = cfg["landscape"]["levels"]
    stages = []
    for run in plan.runs if wanted else []:
        chosen = [level for level in wanted if level < len(run.levels)]
        if not chosen:
            continue
        inputs = {"model": run.levels[0]["train"].inputs["model"]}
        trains = []
        for level in chosen:
            train = run.levels[level]["train"]
            inputs[f"weights_{level}"] = train.output("weights")
            if "mask" in train.inputs:
                inputs[f"mask_{level}"] = train.inputs["mask"]
            trains.append({"level": level, "train": train.id})
        stages.append(make("landscape", None, None, inputs, consumed("landscape", cfg), layout={"trains": trains}))
    return stages or None


def run(job) -> dict:
    """The loss surface of each chosen network of one lottery on the shared slice geometry,
    its table and its figure."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from lth.nn import devices, models
    from lth.nn.training import Split
    from lth.stages import log
    from lth.store.artifacts import atomic_path
    from lth.store.weights import check_masked, load_mask, load_weights, read_model_info, weight_counts
    spec, inputs, out = job.spec, job.inputs, job.dir
    settings = spec["settings"]
    ls = settings["landscape"]
    device, lease = job.start_torch(settings.get("train", {}).get("precision", "fp32"))
    info = read_model_info(inputs["model"])
    splits = job.splits(info, device, batch_size=1)  # evaluation only: one example is a batch
    train = splits["train"]
    chosen = torch.from_numpy(subset_indices(len(train), ls["train_subset"], ls["seed"])).to(train.x.device)
    subset = Split(train.x[chosen], train.y[chosen])
    job.resolved = {"train_subset_examples": len(subset)}
    coords = coordinates(ls["grid"], ls["span"])
    model = models.from_info(info).to(device)
    log(f"landscape {spec['id']}: {len(spec['layout']['trains'])} networks, {ls['grid']}x{ls['grid']} points "
         f"in [-{ls['span']}, {ls['span']}]^2, {len(subset)} training examples, on {devices.describe(device, lease)}")
    job.cooperate()  # from here a gone snakemake stops the grid at its next point
    rows = []
    for entry in spec["layout"]["trains"]:
        level = entry["level"]
        began = time.perf_counter()
        weights = load_weights(inputs[f"weights_{level}"], info)
        mask = load_mask(inputs[f"mask_{level}"], info) if f"mask_{level}" in inputs else None
        if mask is not None:
            check_masked(inputs[f"weights_{level}"], weights, mask, inputs[f"mask_{level}"])
        kept, total = weight_counts(info, mask)
        d1, d2 = directions(weights, info["prunable"], mask, ls["seed"])
        grid = evaluate_grid(model, weights, d1, d2, coords, subset,
                             settings.get("train", {}).get("precision", "fp32"), job.stop)
        rows += [{"level": level, "weights_remaining_pct": 100 * kept / total, **r} for r in grid]
        centre = grid[len(grid) // 2]  # (0, 0): the grid is odd (schema)
        corners = [r["loss"] for r in grid if abs(r["alpha"]) == coords[-1] and abs(r["beta"]) == coords[-1]]
        log(f"landscape level {level} ({100 * kept / total:.1f} %): loss at the centre "
             f"{centre['loss']:.4f} (alpha, beta = {centre['alpha']:g}, {centre['beta']:g}), mean at the corners "
             f"{np.mean(corners):.4f}, "
             f"max {max(r['loss'] for r in grid):.4f} ({time.perf_counter() - began:.1f} s)")
    table = pa.Table.from_pylist([{c: r[c] for c in GRID_COLUMNS} for r in rows])
    with atomic_path(out / "grid.parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    plot(table.to_pandas(), out / "landscape.png")
    plot_surface(table.to_pandas(), out / "surface.png")
    return {"networks": len(spec["layout"]["trains"]), "points_per_network": ls["grid"] ** 2}


from lth.plan.registry import Figure, StageKind, register  # noqa: E402  (the declaration closes the module)
from lth.stages.train import DATA  # noqa: E402

register(StageKind(
    "landscape", 1, run, {"table": "grid.parquet", "plot": "landscape.png", "surface": "surface.png"},
    consumes=DATA + ("train.precision", "landscape.levels", "landscape.grid", "landscape.span", "landscape.seed",
                     "landscape.train_subset"),
    resources="train", plan=plan,
    figures={"plot": Figure("landscape.rst", "Loss landscape", "loss surface around the trained networks",
                            per_lottery=True),
             "surface": Figure("surface.rst", "Loss landscape", "the same surfaces in 3-D", per_lottery=True)},
    announce="loss landscape: {dir}"))
