"""Anatomy of winning tickets (Frankle & Carbin, ICLR 2019, appendix F): where the
surviving weights start, how far they move in training, and how connected the units stay.

Per IMP level (rows of `table`, long format: level, weights_remaining_pct, layer, quantity,
value):
- distance_kept / distance_pruned: mean |theta_T - theta_start| of the weights the next
  pruning keeps / removes, over the positions surviving the current mask; with
  start_magnitude_kept / start_magnitude_pruned, the mean |theta_start| of the same groups.
  The appendix's finding: the weights that survive start larger and move farther. Only for
  levels with a next mask (not the last); per layer and pooled over all weights ("all").
  An empty group gives NaN.
- incoming_mean / outgoing_mean: mean surviving weights per output unit (row of [out, in],
  filter of [out, in, kh, kw]) / per input unit (column, input channel over (out, kh, kw));
  units_without_incoming_pct / units_without_outgoing_pct: the percentage of those units
  with none left. Per layer only: units of different layers have different fan-in, and a
  hidden unit is both an output of one layer and an input of the next.
A mask of None (level 0) keeps everything. Numpy for the numbers, matplotlib in the plots.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lth.report.plots import _figure, _save, remaining_axis

COLUMNS = ["level", "weights_remaining_pct", "layer", "quantity", "value"]


def _keep(mask: dict | None, name: str, shape) -> np.ndarray:
    return np.ones(shape, dtype=bool) if mask is None else np.asarray(mask[name], dtype=bool)


def connectivity(keep: np.ndarray) -> dict[str, float]:
    """Connectivity quantities of one layer's mask (first axis: outputs, second: inputs)."""
    incoming = keep.reshape(keep.shape[0], -1).sum(axis=1)
    outgoing = np.moveaxis(keep, 1, 0).reshape(keep.shape[1], -1).sum(axis=1)
    return {"incoming_mean": float(incoming.mean()), "outgoing_mean": float(outgoing.mean()),
            "units_without_incoming_pct": 100.0 * float(np.mean(incoming == 0)),
            "units_without_outgoing_pct": 100.0 * float(np.mean(outgoing == 0))}


def _mean(parts: list[np.ndarray]) -> float:
    values = np.concatenate(parts) if parts else np.empty(0)
    return float(values.mean()) if values.size else math.nan


def distances(entry: dict, prunable: list[str]) -> dict[str, dict[str, float]]:
    """{layer or "all": {quantity: value}} for the kept/pruned distance and start magnitude."""
    groups = {f"{what}_{fate}": {} for what in ("distance", "start_magnitude")
              for fate in ("kept", "pruned")}
    for name in prunable:
        start = np.asarray(entry["start"][name], dtype=np.float64)
        moved = np.abs(np.asarray(entry["trained"][name], dtype=np.float64) - start)
        current = _keep(entry["mask"], name, start.shape)
        following = _keep(entry["next_mask"], name, start.shape)
        for fate, where in (("kept", current & following), ("pruned", current & ~following)):
            groups[f"distance_{fate}"][name] = moved[where]
            groups[f"start_magnitude_{fate}"][name] = np.abs(start[where])
    out = {"all": {quantity: _mean(list(parts.values())) for quantity, parts in groups.items()}}
    for name in prunable:
        out[name] = {quantity: _mean([parts[name]]) for quantity, parts in groups.items()}
    return out


def table(levels: list[dict], prunable: list[str]) -> pd.DataFrame:
    """Long table of the anatomy quantities of every level (see the module docstring)."""
    rows = []
    for entry in levels:
        head = {"level": entry["level"], "weights_remaining_pct": entry["weights_remaining_pct"]}
        per_layer = {}
        if entry.get("next_mask") is not None:
            per_layer = distances(entry, prunable)
        for name in prunable:
            shape = np.shape(entry["start"][name])
            per_layer.setdefault(name, {}).update(connectivity(_keep(entry["mask"], name, shape)))
        rows += [{**head, "layer": layer, "quantity": quantity, "value": value}
                 for layer, values in per_layer.items() for quantity, value in values.items()]
    return pd.DataFrame(rows, columns=COLUMNS)


def _shown(levels: list[dict]) -> list[dict]:
    """Up to four levels: the first, the last and two evenly spaced between."""
    picks = sorted({int(round(i)) for i in np.linspace(0, len(levels) - 1, min(4, len(levels)))})
    return [levels[i] for i in picks]


def _grid(panels: int, ncols: int = 3):
    ncols = min(ncols, panels)
    nrows = math.ceil(panels / ncols)
    plt, fig, axes = _figure(nrows, ncols, figsize=(4.5 * ncols, 3.5 * nrows), squeeze=False)
    for ax in axes.ravel()[panels:]:
        ax.set_visible(False)
    return plt, fig, axes.ravel()


def _remaining_axis(ax, ylabel: str) -> None:
    remaining_axis(ax)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def _surviving_start(entry: dict, name: str) -> np.ndarray:
    start = np.asarray(entry["start"][name], dtype=np.float64)
    return start[_keep(entry["mask"], name, start.shape)]


def plot_init_histograms(levels: list[dict], prunable: list[str], path) -> None:
    """Per layer, density histograms of the surviving start values of up to four levels."""
    shown = _shown(levels)
    plt, fig, axes = _grid(len(prunable))
    for ax, name in zip(axes, prunable):
        values = [_surviving_start(entry, name) for entry in shown]
        # shared bins so the levels' densities are comparable bar for bar
        bins = np.histogram_bin_edges(np.concatenate(values), bins=50)
        for entry, v in zip(shown, values):
            if v.size:
                ax.hist(v, bins=bins, density=True, histtype="step",
                        label=f"level {entry['level']} ({entry['weights_remaining_pct']:.1f} %)")
        ax.set_title(name)
        ax.set_xlabel("start value of surviving weights")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    _save(plt, fig, path)


def plot_distance(frame: pd.DataFrame, path) -> None:
    """Mean distance moved by the weights the next pruning keeps vs prunes (all layers)."""
    plt, fig, ax = _figure()
    rows = frame[(frame.layer == "all") & frame.quantity.isin(["distance_kept", "distance_pruned"])]
    # a "run" column (several lotteries concatenated) gets one line pair per run
    runs = rows.run.unique() if "run" in rows.columns else [None]
    for run in runs:
        for fate, style in (("kept", "o-"), ("pruned", "s--")):
            group = rows[rows.quantity == f"distance_{fate}"]
            group = group if run is None else group[group.run == run]
            label = f"{fate} by the next pruning" if run is None else f"{run}, {fate}"
            ax.plot(group.weights_remaining_pct, group.value, style, label=label)
    _remaining_axis(ax, "mean |theta_T - theta_start|")
    ax.legend(fontsize=7)
    _save(plt, fig, path)


def plot_connectivity(frame: pd.DataFrame, path) -> None:
    """Per layer, mean surviving weights per unit (left) and units cut off (right)."""
    plt, fig, (left, right) = _grid(2, ncols=2)
    if "run" in frame.columns:  # several lotteries concatenated: show the first
        frame = frame[frame.run == frame.run.iloc[0]]
    # one color per layer in both panels; incoming solid, outgoing dashed
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    layers = frame[frame.layer != "all"].layer.unique()
    colors = {layer: palette[i % len(palette)] for i, layer in enumerate(layers)}
    for ax, pair in ((left, ("incoming_mean", "outgoing_mean")),
                     (right, ("units_without_incoming_pct", "units_without_outgoing_pct"))):
        for quantity, style in zip(pair, ("o-", "s--")):
            for layer, group in frame[frame.quantity == quantity].groupby("layer", sort=False):
                direction = "in" if "incoming" in quantity else "out"
                ax.plot(group.weights_remaining_pct, group.value, style, color=colors.get(layer),
                        label=f"{layer} {direction}")
        ax.legend(fontsize=7, ncol=2)
    _remaining_axis(left, "surviving weights per unit (mean)")
    left.set_yscale("log")
    _remaining_axis(right, "units without weights (%)")
    _save(plt, fig, path)
