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

Start vs final magnitude (appendix F.5: winning ticket weights are more likely to grow in
magnitude than the weights that do not stay in the ticket), `magnitudes`, one row per level
and layer (pooled "all" first): of the weights surviving the level's mask, their count, mean
|theta_start| and mean |theta_T| and the percentage whose magnitude grew (|theta_T| >
|theta_start|); the same three for those the next pruning keeps (kept_next_*) and removes
(pruned_next_*), NaN at the last level (no next mask) and for an empty group.
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


MAGNITUDE_GROUPS = ("", "kept_next_", "pruned_next_")
MAGNITUDE_COLUMNS = ["level", "weights_remaining_pct", "layer", "survivors"] + [
    f"{group}{quantity}" for group in MAGNITUDE_GROUPS for quantity in ("start_magnitude", "final_magnitude", "grew_pct")]


def _magnitude_row(start: list[np.ndarray], final: list[np.ndarray], prefix: str) -> dict[str, float]:
    """Mean |start|, mean |final| and % grown of one group (parts: one array per layer)."""
    a = np.abs(np.concatenate(start)) if start else np.empty(0)
    b = np.abs(np.concatenate(final)) if final else np.empty(0)
    if not a.size:
        return {f"{prefix}start_magnitude": math.nan, f"{prefix}final_magnitude": math.nan,
                f"{prefix}grew_pct": math.nan}
    return {f"{prefix}start_magnitude": float(a.mean()), f"{prefix}final_magnitude": float(b.mean()),
            f"{prefix}grew_pct": 100.0 * float(np.mean(b > a))}


def _magnitude_parts(entry: dict, name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{group prefix: (start values, final values)} of one layer at one level."""
    start = np.asarray(entry["start"][name], dtype=np.float64)
    final = np.asarray(entry["trained"][name], dtype=np.float64)
    current = _keep(entry["mask"], name, start.shape)
    out = {"": (start[current], final[current])}
    if entry.get("next_mask") is not None:
        following = _keep(entry["next_mask"], name, start.shape)
        for prefix, where in (("kept_next_", current & following), ("pruned_next_", current & ~following)):
            out[prefix] = (start[where], final[where])
    return out


def magnitudes(levels: list[dict], prunable: list[str]) -> pd.DataFrame:
    """Start vs final magnitude of the survivors by level (see the module docstring)."""
    rows = []
    for entry in levels:
        head = {"level": entry["level"], "weights_remaining_pct": entry["weights_remaining_pct"]}
        parts = {name: _magnitude_parts(entry, name) for name in prunable}
        for layer, names in [("all", prunable)] + [(name, [name]) for name in prunable]:
            row = {**head, "layer": layer, "survivors": int(sum(parts[n][""][0].size for n in names))}
            for prefix in MAGNITUDE_GROUPS:
                present = [parts[n][prefix] for n in names if prefix in parts[n]]
                row.update(_magnitude_row([p[0] for p in present], [p[1] for p in present], prefix))
            rows.append(row)
    return pd.DataFrame(rows, columns=MAGNITUDE_COLUMNS)


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


def plot_magnitude(levels: list[dict], frame: pd.DataFrame, prunable: list[str], path, points: int = 2000) -> None:
    """Left: mean |theta_start| (dashed) and mean |theta_T| (solid) of the survivors, and of
    those the next pruning keeps and removes, against weights remaining (all layers pooled).
    Right: |theta_T| against |theta_start| of up to `points` seeded random survivors at up
    to four levels, with the diagonal (above it: the weight grew)."""
    plt, fig, (left, right) = _grid(2, ncols=2)
    rows = frame[frame.layer == "all"]
    for prefix, label in (("", "survivors"), ("kept_next_", "kept by the next pruning"),
                          ("pruned_next_", "removed by the next pruning")):
        part = rows[rows[f"{prefix}start_magnitude"].notna()]
        if not len(part):
            continue
        line, = left.plot(part.weights_remaining_pct, part[f"{prefix}final_magnitude"], "o-",
                          label=f"{label}: end of training")
        left.plot(part.weights_remaining_pct, part[f"{prefix}start_magnitude"], "s--", color=line.get_color(),
                  label=f"{label}: start")
    _remaining_axis(left, "mean |w| (all layers)")
    left.legend(fontsize=7)
    rng = np.random.default_rng(0)
    top = 0.0
    for entry in _shown(levels):
        start, final = [], []
        for name in prunable:
            s = np.asarray(entry["start"][name], dtype=np.float64)
            keep = _keep(entry["mask"], name, s.shape)
            start.append(np.abs(s[keep]))
            final.append(np.abs(np.asarray(entry["trained"][name], dtype=np.float64)[keep]))
        start, final = np.concatenate(start), np.concatenate(final)
        if not start.size:
            continue
        pick = rng.choice(start.size, size=min(points, start.size), replace=False)
        right.scatter(start[pick], final[pick], s=3, alpha=0.4,
                      label=f"level {entry['level']} ({entry['weights_remaining_pct']:.1f} %)")
        top = max(top, float(start[pick].max()), float(final[pick].max()))
    right.plot([0, top], [0, top], "k--", linewidth=0.8, label="|theta_T| = |theta_start|")
    right.set_xlabel("|theta_start| of surviving weights")
    right.set_ylabel("|theta_T| (end of training)")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=7, markerscale=3)
    _save(plt, fig, path)
