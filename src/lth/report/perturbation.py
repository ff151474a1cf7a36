"""Perturbation strength against accuracy (Frankle, Schwab & Morcos, ICLR 2020, "The early
phase of neural network training", Fig. 8).

For each perturbation of a level's start (lth.nn.perturb), its *effective standard
deviation*: the standard deviation, over the surviving weights of every prunable layer
pooled, of (perturbed start - unperturbed start) (population std, ddof 0, in float64); with
it the mean of the same differences (the paper: "the mean of each perturbation was
approximately 0"). Against it, the test accuracy of the network trained from the perturbed
start, averaged over seeds (the replicates of one lottery: init.seed and train.seed lists).
Per lottery and level, Pearson's r over the perturbations' (mean effective std, mean
accuracy) points and its two-sided p-value, from the t distribution with n - 2 degrees of
freedom (t = r sqrt((n - 2) / (1 - r^2))). The unperturbed ticket is a reference line of
the figure and rows of the table (effective std 0); it is not one of the points of r.

r and p are given only with >= 2 seeds for every perturbation of the level (the paper
averages 5) and >= 3 perturbations (two points always lie on a line); otherwise the table
and the figure say why instead.

Numpy and pandas (and math) only: the Student-t CDF is the regularized incomplete beta
function, computed here by its continued fraction. Matplotlib in the plot.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

ONE_SEED = "one seed: r and p need >= 2 seeds"
FEW_POINTS = "r and p need >= 3 perturbations"
TICKET = "ticket"  # the unperturbed reference: its variant name and kind "unperturbed"

COLUMNS = ["lottery", "level", "weights_remaining_pct", "variant", "kind", "noise", "seed", "seeds",
           "effective_std", "effective_mean", "test_accuracy", "test_accuracy_std", "early_stop_test_accuracy"]
CORRELATION_COLUMNS = ["lottery", "level", "weights_remaining_pct", "perturbations", "seeds", "r", "p", "note"]


# ---- the effective perturbation ----

def effective(perturbed: dict, start: dict, mask: dict) -> dict[str, float]:
    """{"effective_std", "effective_mean"}: std (ddof 0) and mean of perturbed - start over
    the positions the mask keeps, all of the mask's layers pooled (float64)."""
    parts = []
    for name, keep in mask.items():
        keep = np.asarray(keep, dtype=bool)
        diff = np.asarray(perturbed[name], dtype=np.float64) - np.asarray(start[name], dtype=np.float64)
        if diff.shape != keep.shape:
            raise ValueError(f"{name}: shapes differ (weights {diff.shape}, mask {keep.shape})")
        parts.append(diff[keep])
    values = np.concatenate(parts) if parts else np.empty(0)
    if not values.size:
        return {"effective_std": math.nan, "effective_mean": math.nan}
    return {"effective_std": float(values.std()), "effective_mean": float(values.mean())}


# ---- Pearson r and its p-value ----

def pearson(x, y) -> float:
    """Pearson's correlation coefficient of two equally long sequences (NaN when either is
    constant or shorter than 2)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"pearson needs two 1-d sequences of one length, got {x.shape} and {y.shape}")
    if x.size < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denominator == 0:
        return math.nan
    return max(-1.0, min(1.0, float(dx @ dy) / denominator))


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method, as
    in Numerical Recipes' betacf); converges fast for x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            step = c * d
            h *= step
        if abs(step - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), a, b > 0, 0 <= x <= 1."""
    if a <= 0 or b <= 0 or not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs a, b > 0 and 0 <= x <= 1, got a={a}, b={b}, x={x}")
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b  # symmetry: I_x(a,b) = 1 - I_1-x(b,a)


def t_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df > 0 degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    if df <= 0:
        raise ValueError(f"the t distribution needs df > 0, got {df}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t * t)))


def pearson_p(r: float, n: int) -> float:
    """Two-sided p-value of Pearson's r over n points (H0: no correlation), from t with
    n - 2 degrees of freedom; NaN for n < 3 or r NaN, 0 for |r| = 1."""
    if n < 3 or math.isnan(r):
        return math.nan
    if abs(r) >= 1.0:
        return 0.0
    return t_two_sided(r * math.sqrt((n - 2) / (1.0 - r * r)), n - 2)


# ---- tables ----

def table(rows: list[dict]) -> pd.DataFrame:
    """Per-seed rows (one per training: lottery, level, weights_remaining_pct, variant, kind,
    noise, seed, effective_std, effective_mean, test_accuracy, early_stop_test_accuracy;
    the tickets with kind "unperturbed") followed by one "mean" row per lottery, level and
    variant (seed "mean", `seeds` its count, test_accuracy_std the std over seeds, ddof 1)."""
    seeds = pd.DataFrame(rows).assign(seeds=1, test_accuracy_std=math.nan)
    seeds = seeds.reindex(columns=COLUMNS)
    keys = ["lottery", "level", "variant"]
    grouped = seeds.groupby(keys, sort=False, dropna=False)
    means = grouped.agg(weights_remaining_pct=("weights_remaining_pct", "mean"), kind=("kind", "first"),
                        noise=("noise", "first"), seeds=("seed", "size"), effective_std=("effective_std", "mean"),
                        effective_mean=("effective_mean", "mean"), test_accuracy=("test_accuracy", "mean"),
                        test_accuracy_std=("test_accuracy", "std"),
                        early_stop_test_accuracy=("early_stop_test_accuracy", "mean")).reset_index()
    means["seed"] = "mean"
    return pd.concat([seeds, means.reindex(columns=COLUMNS)], ignore_index=True)


def means(frame: pd.DataFrame) -> pd.DataFrame:
    """The "mean" rows of `table`."""
    return frame[frame.seed == "mean"].reset_index(drop=True)


def correlations(frame: pd.DataFrame) -> pd.DataFrame:
    """Per lottery and level: Pearson r and p of the perturbations' mean effective std
    against their mean test accuracy, or a note saying why not (ONE_SEED, FEW_POINTS)."""
    rows = []
    averaged = means(frame)
    for (lottery, level), group in averaged.groupby(["lottery", "level"], sort=False):
        points = group[group.variant != TICKET]
        seeds = int(points.seeds.min()) if len(points) else 0
        r = p = math.nan
        note = ""
        if seeds < 2:
            note = ONE_SEED
        elif len(points) < 3:
            note = FEW_POINTS
        else:
            r = pearson(points.effective_std, points.test_accuracy)
            p = pearson_p(r, len(points))
        rows.append({"lottery": lottery, "level": level, "weights_remaining_pct": float(group.weights_remaining_pct.mean()),
                     "perturbations": len(points), "seeds": seeds, "r": r, "p": p, "note": note})
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def describe(row) -> str:
    """One correlation row as words: "r = -0.672, p = 0.008 (14 perturbations, 5 seeds)" or its note."""
    if isinstance(row.note, str) and row.note:
        return f"{row.note} ({row.perturbations} perturbations, {row.seeds} seed{'s' if row.seeds != 1 else ''})"
    return f"r = {row.r:.3f}, p = {row.p:.3g} ({row.perturbations} perturbations, {row.seeds} seeds)"


# ---- the figure ----

def plot(frame: pd.DataFrame, result: pd.DataFrame, path) -> None:
    """One panel per lottery and level: each perturbation's mean effective std (x) against
    its mean test accuracy over seeds (y, +- the std over seeds), the unperturbed ticket's
    mean accuracy as a dashed line; r and p (or why not) in the panel's title."""
    from lth.report.plots import _figure, _save
    averaged = means(frame)
    panels = list(result.itertuples())
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    plt, fig, axes = _figure(nrows, ncols, figsize=(5.5 * ncols, 4.2 * nrows), squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    several = result.lottery.nunique() > 1
    for ax, row in zip(axes, panels):
        group = averaged[(averaged.lottery == row.lottery) & (averaged.level == row.level)]
        points = group[group.variant != TICKET]
        ax.errorbar(points.effective_std, 100 * points.test_accuracy, yerr=100 * points.test_accuracy_std.fillna(0),
                    fmt="o", capsize=3, label="perturbations (mean over seeds)")
        for point in points.itertuples():
            ax.annotate(point.variant, (point.effective_std, 100 * point.test_accuracy), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        ticket = group[group.variant == TICKET]
        if len(ticket):
            ax.axhline(100 * float(ticket.test_accuracy.iloc[0]), color="k", linestyle="--", linewidth=1,
                       label="unperturbed ticket")
        head = f"{row.lottery}, " if several else ""
        ax.set_title(f"{head}level {row.level} ({row.weights_remaining_pct:.1f} % remaining)\n{describe(row)}",
                     fontsize=8)
        ax.set_xlabel("effective std of the perturbation")
        ax.set_ylabel("final test accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    _save(plt, fig, path)
