"""Training trajectories on the loss landscape (Li, Xu, Taylor, Studer & Goldstein,
"Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018, section 7; drawn side by side
for pruned networks as in Ma et al., NeurIPS 2021, Figs. 4-5).

Random directions miss a trajectory: in high dimension two random directions are nearly
orthogonal to it. Li et al. instead take the weights saved along training, theta_0 ... theta_n
(theta_n the final weights), stack the differences

    M = [theta_0 - theta_n; ...; theta_(n-1) - theta_n]     (n x d)

and use the top two principal directions of M (PCA: rows centred on their mean, then the
SVD) as the plane's axes. The trajectory is projected on them with the final weights at the
origin, the loss is evaluated on the plane through theta_n spanned by the two directions,

    L(alpha, beta) = loss(theta_n + alpha * d1 + beta * d2),

and the trajectory is drawn over its contours; each axis is labelled with the share of M's
variance its direction explains.

numpy, pandas and matplotlib only (no torch): the evaluation of the grid lives with the
stages.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


def pca_directions(points: np.ndarray) -> dict:
    """The top two principal directions of a trajectory, Li et al.'s way.

    `points`: (n + 1, d) rows theta_0 ... theta_n in training order, the last row the final
    weights; n >= 2. M = points[:-1] - points[-1]; as sklearn's PCA does, M's rows are
    centred on their mean before the SVD (Mc = M - mean(M)), and the directions are the
    first two right singular vectors of Mc.

    Returns a dict:
    - "directions": (2, d) orthonormal unit vectors (float64);
    - "explained": (2,) explained variance ratios, s_k^2 / sum_j s_j^2 over all singular
      values s of Mc (the share of Mc's total variance; both 0 when every row is equal);
    - "coords": (n + 1, 2) the projections (points - points[-1]) @ directions.T, not
      centred: the final point is exactly (0, 0) and row 0 is the start.

    Sign convention: each direction is oriented so that the start point's coordinate on it
    is negative (the trajectory arrives at the origin from the negative side of each axis);
    where that coordinate is exactly 0, so that the direction's component of largest
    magnitude (the first such, on ties) is positive.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] < 3 or points.shape[1] < 2:
        raise ValueError(f"need (n + 1, d) points with n >= 2 saved points before the final and d >= 2, "
                         f"got shape {points.shape}")
    diffs = points - points[-1]  # the last row exactly 0
    m = diffs[:-1]
    centred = m - m.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    directions = vt[:2].copy()
    total = float(np.sum(s ** 2))
    explained = s[:2] ** 2 / total if total > 0 else np.zeros(2)
    for k in range(2):
        start = float(diffs[0] @ directions[k])
        if start > 0 or (start == 0 and directions[k][np.argmax(np.abs(directions[k]))] < 0):
            directions[k] = -directions[k]
    coords = diffs @ directions.T
    coords[-1] = 0.0  # a zero row projects to 0 already; -0.0 normalised to 0.0
    return {"directions": directions, "explained": np.asarray(explained, dtype=np.float64), "coords": coords}


def _axis(values: np.ndarray, grid: int, margin: float, fallback: float) -> np.ndarray:
    """`grid` evenly spaced values k * h, k = -j0 ... grid - 1 - j0 (an integer lattice
    through 0, so 0 is the value at k = 0, exactly 0.0), with the smallest step h that covers
    [min - margin * extent, max + margin * extent] (0 included in [min, max])."""
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    extent = high - low
    if not extent > 0:
        extent = fallback
        low, high = low - extent / 2, high + extent / 2  # degenerate axis: symmetric about its values
    a, b = low - margin * extent, high + margin * extent  # a <= 0 <= b
    best = None
    for j0 in range(grid):  # j0 values below 0, grid - 1 - j0 above
        left = -a / j0 if j0 > 0 else (0.0 if a >= 0 else math.inf)
        right = b / (grid - 1 - j0) if j0 < grid - 1 else (0.0 if b <= 0 else math.inf)
        step = max(left, right)
        if best is None or step < best[0]:
            best = (step, j0)
    step, j0 = best
    if not math.isfinite(step):  # both sides of 0 to cover with too few values (grid < 3)
        raise ValueError(f"{grid} grid values cannot hold 0 and cover [{a:g}, {b:g}]")
    return step * np.arange(-j0, grid - j0, dtype=np.float64)


def plane(coords: np.ndarray, grid: int, margin: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta): the values of a `grid` x `grid` evaluation grid on the PCA plane, alpha
    along direction 1 and beta along direction 2, each covering the trajectory's coordinates
    (and 0) with `margin` of their extent on both sides.

    Each axis is a lattice k * h (k integer, h > 0 the smallest step that covers the range
    with `grid` values), so 0.0 is exactly one of its values (k = 0: 0 * h) and the final
    weights are a grid point; the lattice may reach up to one step beyond the margin on one
    side. An axis whose coordinates are all equal gets the other axis's extent (1.0 when
    both are degenerate), centred on its values."""
    coords = np.asarray(coords, dtype=np.float64)
    if grid < 3:
        raise ValueError(f"need at least 3 grid points per axis (0 and both sides of it), got {grid}")
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
        raise ValueError(f"need (points, 2) coordinates, got shape {coords.shape}")
    extents = [max(float(coords[:, i].max()), 0.0) - min(float(coords[:, i].min()), 0.0) for i in range(2)]
    fallback = max(extents) if max(extents) > 0 else 1.0
    return tuple(_axis(coords[:, i], grid, margin, fallback) for i in range(2))  # type: ignore[return-value]


def plot(frames: list[tuple[str, pd.DataFrame, np.ndarray, tuple]], path) -> None:
    """One filled contour panel of the loss per network, side by side, on one shared
    logarithmic colour scale and the same contour levels, each with its training trajectory
    on top (a line with markers from the start, a circle, to the final weights, a star, at
    the origin). `frames`: (title, grid rows with columns alpha, beta, loss, coords (n + 1, 2)
    of the trajectory from pca_directions, explained (2,) variance ratios)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not frames:
        raise ValueError("no trajectory to plot")
    from lth.report.plots import _write, loss_colorbar, loss_contours, loss_scale
    low, high = loss_scale(np.concatenate([np.asarray(f[1].loss, dtype=np.float64) for f in frames]))
    fig, axes = plt.subplots(1, len(frames), figsize=(4.2 * len(frames) + 1.2, 4.2), squeeze=False,
                             layout="constrained")
    filled = None
    for ax, (title, rows, coords, explained) in zip(axes[0], frames):
        coords = np.asarray(coords, dtype=np.float64)
        filled = loss_contours(ax, rows, low, high)
        ax.plot(coords[:, 0], coords[:, 1], "-", color="red", marker=".", markersize=4, linewidth=1.0)
        ax.plot(coords[0, 0], coords[0, 1], marker="o", color="orange", markersize=7, markeredgecolor="white",
                linestyle="none", label="start")
        final = rows.loc[(rows.alpha.abs() + rows.beta.abs()).idxmin()]
        ax.plot(coords[-1, 0], coords[-1, 1], marker="*", color="red", markersize=12, markeredgecolor="white",
                linestyle="none", label=f"final: loss {final.loss:.3g}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"PC 1 ({100 * float(explained[0]):.1f} %)")
        ax.set_ylabel(f"PC 2 ({100 * float(explained[1]):.1f} %)")
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(5))
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    loss_colorbar(fig.colorbar(filled, ax=list(axes[0]), shrink=0.9), low, high)
    _write(plt, fig, path)
