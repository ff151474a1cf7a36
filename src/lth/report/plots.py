"""Plots of the analyses (matplotlib, Agg). Each function writes one PNG atomically."""
from __future__ import annotations

import pandas as pd

from lth.store.artifacts import atomic_path


def _figure(nrows: int = 1, ncols: int = 1, figsize=(6, 4), **options):
    """(pyplot, figure, axes) on the Agg backend; options go to plt.subplots."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt, *plt.subplots(nrows, ncols, figsize=figsize, **options)


def _save(plt, fig, path) -> None:
    fig.tight_layout()
    _write(plt, fig, path)


def _write(plt, fig, path) -> None:
    """The figure as it is laid out (constrained or by hand: no tight_layout), PNG at 120 dpi,
    written atomically; the figure closed."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def remaining_axis(ax) -> None:
    """Weights remaining on a log axis, inverted so pruning proceeds left to right, with
    plain percentages (100, 60, 20) as tick labels instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter
    ax.set_xscale("log")
    ax.invert_xaxis()
    plain = FuncFormatter(lambda value, _: f"{value:g}")

    def minor(value, _):  # over more than a decade every minor label would collide: 2s and 5s only
        low, high = sorted(ax.get_xlim())
        text = f"{value:g}"
        return text if high <= 10 * max(low, 1e-12) or text[0] in "25" else ""
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(minor))
    ax.set_xlabel("weights remaining (%)")


def _panels(labels: list, per_panel=(6, 4), rows: int = 1):
    """(pyplot, figure, axes[lottery][i]) with one column of `rows` panels per lottery."""
    plt, fig, axes = _figure(rows, len(labels), figsize=(per_panel[0] * len(labels), per_panel[1] * rows),
                             sharey=True, squeeze=False)
    return plt, fig, {label: [axes[r][c] for r in range(rows)] for c, label in enumerate(labels)}


def rp_vs_p(frame: pd.DataFrame, path) -> None:
    """R_p(theta_0, theta_T) against p, one line per level and one panel per lottery (Liu et
    al.'s point is the contrast between learning rates), with R_p = p."""
    rows = frame[frame.layer == "all"]
    runs = list(dict.fromkeys(rows.run))
    plt, fig, axes = _panels(runs, per_panel=(5, 4))
    ps = sorted(rows.p.unique())
    for run in runs:
        ax = axes[run][0]
        for level, group in rows[rows.run == run].groupby("level"):
            ax.plot(group.p, group.r_p, "o-", label=f"level {level} ({group.weights_remaining_pct.iloc[0]:.1f} %)")
        ax.plot(ps, ps, "k--", label="R_p = p (uncorrelated)")
        ax.set_xlabel("p (top fraction by magnitude)")
        if len(runs) > 1:
            ax.set_title(run, fontsize=8)
        ax.legend(fontsize=7, ncol=2)
        ax.grid(True, alpha=0.3)
    axes[runs[0]][0].set_ylabel("R_p(theta_0, theta_T)")
    _save(plt, fig, path)


def rp_vs_remaining(frame: pd.DataFrame, path) -> None:
    """R_p against weights remaining, one line per p and lottery: theta_0 vs theta_T solid,
    consecutive levels' trained weights (where computed) dashed."""
    plt, fig, ax = _figure()
    rows = frame[frame.layer == "all"]
    colors = {}
    for (comparison, run, p), group in rows.groupby(["comparison", "run", "p"], sort=False):
        consecutive = comparison != "theta_0 vs theta_T"
        what = "theta_T(L-1) vs theta_T(L)" if consecutive else "theta_0 vs theta_T"
        label = f"{what}, p = {p:g}" if rows.run.nunique() == 1 else f"{run}: {what}, p = {p:g}"
        line, = ax.plot(group.weights_remaining_pct, group.r_p, "x--" if consecutive else "o-", label=label,
                        color=colors.get((run, p)))
        colors[(run, p)] = line.get_color()
    remaining_axis(ax)
    ax.set_ylabel("R_p")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.set_size_inches(9, 4)
    ax.grid(True, which="both", alpha=0.3)
    _save(plt, fig, path)


def _network_label(level, variant, k, remaining) -> str:
    return f"level {level} ({remaining:.1f} %)" + ("" if variant == "ticket" else f" {variant}") + f" k={k}"


def _k_order(k: str) -> tuple:
    """Rewind points in training order: iterations and epochs by count (epochs after), continue last."""
    if k == "continue":
        return (2, 0)
    return (int(k.endswith("ep")), int(k[:-2]))


def error_vs_alpha(paths: pd.DataFrame, path) -> None:
    """Error along the linear path between the copies (mean over pairs and replicates), test
    set above and training subset below, one line per network and k, one column per lottery."""
    lotteries = list(dict.fromkeys(paths.lottery))
    plt, fig, axes = _panels(lotteries, per_panel=(5, 3.5), rows=2)
    for lottery in lotteries:
        for ax, split in zip(axes[lottery], ("test", "train")):
            part = paths[(paths.lottery == lottery) & (paths.split == split)]
            for (level, variant, k), group in part.groupby(["level", "variant", "k"], sort=True):
                mean = group.groupby("alpha").error.mean()
                ax.plot(mean.index, 100 * mean.values, ".-",
                        label=_network_label(level, variant, k, group.weights_remaining_pct.iloc[0]))
            ax.set_title(f"{split} {'set' if split == 'test' else 'subset'}"
                         + ("" if len(lotteries) == 1 else f" ({lottery})"), fontsize=8)
            ax.set_xlabel("alpha  (0: copy 2, 1: copy 1)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
    for ax in axes[lotteries[0]]:
        ax.set_ylabel("error (%)")
    _save(plt, fig, path)


def instability_vs_k(result: pd.DataFrame, path, threshold: float) -> None:
    """Instability against the rewind point k, one line per level and variant (lotteries
    that differ only in rewind.to are one line), with the stability threshold."""
    plt, fig, ax = _figure()
    frame = result.assign(lottery=result.lottery.str.replace(r"rewind\.to=\S+\s?", "", regex=True).str.strip())
    ks = sorted(frame.k.unique(), key=_k_order)
    position = {k: i for i, k in enumerate(ks)}
    for (lottery, level, variant), group in frame.groupby(["lottery", "level", "variant"], sort=True):
        mean = group.groupby("k").instability_test.mean()
        order = sorted(mean.index, key=_k_order)
        label = f"level {level} ({group.weights_remaining_pct.iloc[0]:.1f} %)" + \
            ("" if variant == "ticket" else f" {variant}") + (f" {lottery}" if lottery not in ("", "imp") else "")
        ax.plot([position[k] for k in order], [100 * mean[k] for k in order], "o-", label=label)
    ax.set_xticks(range(len(ks)), ks)
    ax.set_xlabel("rewind point k")
    ax.set_ylabel("instability (test error barrier, %)")
    ax.axhline(100 * threshold, color="k", ls="--", lw=0.8, label=f"stable below {100 * threshold:g} %")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    _save(plt, fig, path)


def instability_vs_remaining(result: pd.DataFrame, path, threshold: float) -> None:
    """Instability against weights remaining, one line per lottery, variant and k."""
    plt, fig, ax = _figure()
    for (lottery, variant, k), group in result.groupby(["lottery", "variant", "k"], sort=False):
        mean = group.groupby("weights_remaining_pct").instability_test.mean().sort_index(ascending=False)
        label = f"{variant} k={k}" + ("" if result.lottery.nunique() == 1 else f" {lottery}")
        ax.plot(mean.index, 100 * mean.values, "o-", label=label)
    remaining_axis(ax)
    ax.axhline(100 * threshold, color="k", ls="--", lw=0.8, label=f"stable below {100 * threshold:g} %")
    ax.set_ylabel("instability (test error barrier, %)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    _save(plt, fig, path)


# variant -> (legend name, marker, line style); the dense network's reference is black and dashed
_VARIANT_STYLES = {"ticket": ("IMP ticket", "o", "-"), "random_prune": ("random pruning", "s", ":"),
                   "random_reinit": ("random reinit", "^", "-.")}


def _variant_style(variant: str) -> tuple:
    return _VARIANT_STYLES.get(variant, (variant, "D", (0, (5, 1, 1, 1))))


def _without_rewind(labels: pd.Series) -> pd.Series:
    """Lottery labels without rewind.to: the lotteries of one rewinding sweep are one panel."""
    return labels.str.replace(r"rewind\.to=\S+\s?", "", regex=True).str.strip().replace("", "imp")


def error_vs_k(result: pd.DataFrame, path) -> None:
    """Test error against the rewind point k (LMC Fig. 7): one line per level (a colour each)
    and variant (a marker and line style each: IMP ticket solid, random pruning dotted, ...),
    mean over runs; the dense network's final test error dashed; one panel per lottery
    (lotteries that differ only in rewind.to are one panel: their k are the sweep). k in
    training order: by the `k_iterations` column where there is one (epochs converted),
    else iterations before epochs; a single k is one point per line."""
    frame = result.assign(lottery=_without_rewind(result.lottery.astype(str)),
                          error=100 * (1 - result.test_accuracy))
    if "k_iterations" not in frame:
        frame = frame.assign(k_iterations=float("nan"))
    lotteries = list(dict.fromkeys(frame.lottery))
    first = frame.groupby("k").k_iterations.first()
    ks = sorted(first.index, key=lambda k: (0, first[k], k) if pd.notna(first[k]) else (1, *_k_order(k)))
    position = {k: i for i, k in enumerate(ks)}
    ticks = [k if pd.isna(first[k]) or k.endswith("it") else f"{k}\n({first[k]:g} it)" for k in ks]
    levels = sorted(frame.level.unique())
    plt, fig, axes = _panels(lotteries, per_panel=(6, 4))
    for lottery in lotteries:
        ax, part = axes[lottery][0], frame[frame.lottery == lottery]
        for (level, variant), group in part.groupby(["level", "variant"], sort=True):
            mean = group.groupby("k").error.mean()
            order = sorted(mean.index, key=position.get)
            name, marker, style = _variant_style(variant)
            ax.plot([position[k] for k in order], [mean[k] for k in order], marker=marker, ls=style,
                    color=f"C{levels.index(level) % 10}",
                    label=f"level {level} ({group.weights_remaining_pct.iloc[0]:.1f} %) {name}")
        dense = 100 * (1 - part.groupby("run").dense_test_accuracy.first().mean())
        ax.axhline(dense, color="k", ls="--", lw=0.9, label=f"dense network ({dense:.2f} %)")
        ax.set_xticks(range(len(ks)), ticks)
        ax.set_xlim(-0.5, len(ks) - 0.5)
        ax.set_xlabel("rewind point k")
        ax.set_title("test error of masked theta_k trained to the end" + ("" if len(lotteries) == 1 else f" ({lottery})"),
                     fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(True, alpha=0.3)
    axes[lotteries[0]][0].set_ylabel("test error (%, mean of the copies)")
    _save(plt, fig, path)


_CRITERIA = (("stable", "stable (instability below the threshold)"),
             ("matching", "matching (accuracy drop below instability.matching)"),
             ("stable_matching", "stable and matching"))


def onset_vs_remaining(onsets: pd.DataFrame, path) -> None:
    """The median rewind iteration at which subnetworks become stable, matching, and both,
    against weights remaining (LMC Fig. 9; lth.report.instability.onset): one row of panels
    per criterion, one column per lottery (lotteries that differ only in rewind.to are one:
    the table's networks that are no sweep, a random reinit on each lottery's mask, join
    their panel), one line per variant (and run where a panel has several). A median that
    is never reached within the sweep is missing from the line (NaN) and marked with an x at
    the top of its panel instead."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import blended_transform_factory
    panel = _without_rewind(onsets.lottery.astype(str))
    lotteries = list(dict.fromkeys(panel))
    plt, fig, axes = _panels(lotteries, per_panel=(6, 3), rows=len(_CRITERIA))
    for lottery in lotteries:
        part = onsets[panel == lottery]
        several = part.run.nunique() > 1
        for ax, (criterion, title) in zip(axes[lottery], _CRITERIA):
            top = blended_transform_factory(ax.transData, ax.transAxes)
            handles = []
            for i, ((run, variant), group) in enumerate(part.groupby(["run", "variant"], sort=False)):
                group = group.sort_values("weights_remaining_pct", ascending=False)
                name, marker, style = _variant_style(variant)
                label = name + (f" ({run})" if several else "")
                y = group[f"median_k_{criterion}"]
                line, = ax.plot(group.weights_remaining_pct, y, marker=marker, ls=style, color=f"C{i % 10}",
                                label=label)
                handles.append(line)
                never = group[y.isna()]
                if len(never):  # in the band above the data, one height per line so none hides another
                    ax.plot(never.weights_remaining_pct, [0.96 - 0.035 * (i % 4)] * len(never), marker="x",
                            ls="none", ms=7, color=line.get_color(), transform=top, clip_on=False)
            handles.append(Line2D([], [], color="gray", marker="x", ls="none",
                                  label="never within the sweep (x at the top, no line there)"))
            remaining_axis(ax)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(title + ("" if len(lotteries) == 1 else f" ({lottery})"), fontsize=8)
            ax.legend(handles=handles, fontsize=6)
            ax.grid(True, which="both", alpha=0.3)
    for ax in axes[lotteries[0]]:
        ax.set_ylabel("median k (iterations)")
    low, high = axes[lotteries[0]][0].get_ylim()  # shared: once every line is drawn
    high = max(high, 1.0)
    axes[lotteries[0]][0].set_ylim(-0.04 * high, 1.25 * high)  # k = 0 visible; the top band for "never"
    fig.suptitle("median rewind iteration from which subnetworks are stable / matching", fontsize=9)
    _save(plt, fig, path)


# ---- loss surfaces (landscape contours and 3-D, trajectories): one log scale shared by panels ----

def loss_scale(losses) -> tuple[float, float]:
    """(low, high) of a logarithmic colour scale over the finite losses of all panels."""
    import numpy as np
    losses = np.asarray(losses, dtype=np.float64)
    finite = losses[np.isfinite(losses)]
    low = max(float(finite.min()) if len(finite) else 1e-3, 1e-6)
    high = max(float(finite.max()) if len(finite) else 1.0, low * 1.01)
    return low, high


def loss_grid(rows: pd.DataFrame, low: float, high: float):
    """(alphas, betas, z): a network's grid rows as a beta x alpha table of losses, with inf,
    NaN and out-of-range values at the scale's ends."""
    import numpy as np
    alphas, betas = np.sort(rows.alpha.unique()), np.sort(rows.beta.unique())
    table = rows.pivot(index="beta", columns="alpha", values="loss").reindex(index=betas, columns=alphas)
    z = np.clip(table.to_numpy(dtype=np.float64), low, high)
    return alphas, betas, np.where(np.isfinite(z), z, high)


def loss_contours(ax, rows: pd.DataFrame, low: float, high: float):
    """A network's grid as filled contours of the loss on the shared log scale (25 levels),
    every third level also a white line; returns the filled set (the colour bar's mappable)."""
    import numpy as np
    from matplotlib.colors import LogNorm
    alphas, betas, z = loss_grid(rows, low, high)
    levels = np.geomspace(low, high, 25)
    filled = ax.contourf(alphas, betas, z, levels=levels, norm=LogNorm(vmin=low, vmax=high), cmap="viridis",
                         extend="neither")
    ax.contour(alphas, betas, z, levels=levels[::3], colors="white", linewidths=0.4, alpha=0.6)
    return filled


def loss_ticks(low: float, high: float) -> list:
    """1, 2, 5 per decade within [low, high]: the log scale's labelled values."""
    import math
    return [m * 10.0 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
            for m in (1, 2, 5) if low <= m * 10.0 ** e <= high]


def loss_colorbar(bar, low: float, high: float) -> None:
    """The shared loss colour bar's ticks and label."""
    ticks = loss_ticks(low, high)
    bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
    bar.minorticks_off()
    bar.set_label("training loss (cross-entropy, log scale)")
