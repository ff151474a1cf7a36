"""Plots of the analyses (matplotlib, Agg). Each function writes one PNG atomically."""
from __future__ import annotations

import pandas as pd

from .artifacts import atomic_path


def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt, *plt.subplots(figsize=(6, 4))


def _save(plt, fig, path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def rp_vs_p(frame: pd.DataFrame, path) -> None:
    """R_p(theta_0, theta_T) against p, one line per level (first lottery), with R_p = p."""
    plt, fig, ax = _figure()
    rows = frame[(frame.layer == "all") & (frame.run == frame.run.iloc[0])]
    for level, group in rows.groupby("level"):
        ax.plot(group.p, group.r_p, "o-", label=f"level {level} ({group.weights_remaining_pct.iloc[0]:.1f} %)")
    ps = sorted(rows.p.unique())
    ax.plot(ps, ps, "k--", label="R_p = p (uncorrelated)")
    ax.set_xlabel("p (top fraction by magnitude)")
    ax.set_ylabel("R_p(theta_0, theta_T)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, alpha=0.3)
    _save(plt, fig, path)


def rp_vs_remaining(frame: pd.DataFrame, path) -> None:
    """R_p(theta_0, theta_T) against weights remaining, one line per p and lottery."""
    plt, fig, ax = _figure()
    rows = frame[frame.layer == "all"]
    for (run, p), group in rows.groupby(["run", "p"], sort=False):
        label = f"p = {p:g}" if rows.run.nunique() == 1 else f"{run}, p = {p:g}"
        ax.plot(group.weights_remaining_pct, group.r_p, "o-", label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("R_p(theta_0, theta_T)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    _save(plt, fig, path)
