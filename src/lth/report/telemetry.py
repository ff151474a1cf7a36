"""Telemetry tables and the panels of the early-phase paper's Fig. 3 (Frankle, Schwab & Morcos
2020) from the trainings' telemetry.parquet (lth.nn.telemetry): pandas and matplotlib.

`settle` says when the signs stop changing: the first telemetry point from which the
fraction of surviving weights whose sign differs from theta_0 stays within `tolerance`
(default 0.01, one percentage point) of its value at the end of training, at that point and
every later one. A network whose fraction still moves more than that near the end settles at
its last point.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from lth.nn.telemetry import ALL

# The panels: (quantity or quantities, y label); the ten weights get their own panel.
PANELS = (
    (("test_accuracy",), "test accuracy (subset)"),
    (("test_loss",), "test loss (subset)"),
    (("mean_abs",), "mean |w|"),
    (("sign_changed_init",), "signs differing from θ0 (%)"),
    (("grad_norm",), "gradient norm (next step's batch)"),
    (("l2_init", "l2_final"), "L2 distance: to θ0 (solid), to final (dashed)"),
    (("cos_init", "cos_final"), "cosine: to θ0 (solid), to final (dashed)"),
)
SETTLE_TOLERANCE = 0.01


def settle(iterations, fractions, tolerance: float = SETTLE_TOLERANCE) -> int:
    """The first iteration from which `fractions` stay within `tolerance` of the last one
    (module docstring). Both ordered by iteration."""
    values = np.asarray(fractions, dtype=np.float64)
    outside = np.flatnonzero(np.abs(values - values[-1]) > tolerance)
    return int(np.asarray(iterations)[0 if not len(outside) else outside[-1] + 1])


def overall(table: pd.DataFrame, quantity: str) -> pd.DataFrame:
    rows = table[(table.layer == ALL) & (table.quantity == quantity)]
    return rows.sort_values("iteration")[["iteration", "value"]]


def summarise(networks: list) -> pd.DataFrame:
    """One row per network: networks are dicts with name, level, variant,
    weights_remaining_pct and table (its telemetry)."""
    out = []
    for net in networks:
        signs = overall(net["table"], "sign_changed_init")
        row = {k: net[k] for k in ("run", "lottery", "level", "variant", "weights_remaining_pct")}
        row["points"] = len(signs)
        row["sign_changed_init_final"] = float(signs.value.iloc[-1])
        row["signs_settle_iteration"] = settle(signs.iteration, signs.value)
        for quantity in ("l2_init", "cos_init", "mean_abs", "grad_norm"):
            values = overall(net["table"], quantity).value
            row[f"{quantity}_first"], row[f"{quantity}_final"] = float(values.iloc[0]), float(values.iloc[-1])
        out.append(row)
    return pd.DataFrame(out)


def label(net: dict) -> str:
    return f"level {net['level']} ({net['weights_remaining_pct']:.1f} %) {net['variant']}"


def plot(networks: list, path, title: str = "") -> None:
    """Fig. 3's panels, one line per network; the tracked weights of the first network."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(1, len(networks))))
    for ax, (quantities, ylabel) in zip(axes.flat, PANELS):
        for net, colour in zip(networks, colours):
            for quantity, style in zip(quantities, ("-", "--")):
                rows = overall(net["table"], quantity)
                scale = 100.0 if quantity == "sign_changed_init" else 1.0
                ax.plot(rows.iteration, rows.value * scale, style, color=colour,
                        label=label(net) if style == "-" else None)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
    ax = axes.flat[len(PANELS)]
    if networks:
        weights = networks[0]["table"]
        weights = weights[weights.quantity == "weight"]
        for (layer, index), rows in weights.groupby(["layer", "index"]):
            rows = rows.sort_values("iteration")
            ax.plot(rows.iteration, rows.value, lw=1)
        ax.set_title(f"{weights[['layer', 'index']].drop_duplicates().shape[0]} seeded weights of "
                     f"{label(networks[0])}", fontsize=9)
    ax.set_xlabel("iteration")
    ax.set_ylabel("weight value")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title or "Telemetry (Frankle, Schwab & Morcos 2020, Fig. 3)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
