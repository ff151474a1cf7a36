"""The per-level summary of an IMP run: one row per level, plus the accuracy plot. Torch-free."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from lth.store.artifacts import atomic_path, read_json, read_table

COLUMNS = ["run", "lottery", "variant", "level", "train_id", "weights_kept", "weights_total", "weights_remaining_pct",
           "early_stop_iteration", "early_stop_val_loss", "early_stop_test_accuracy",
           "final_iteration", "final_test_accuracy", "final_val_accuracy", "final_train_accuracy",
           "generalization_gap"]
# No timings here: the table is an artifact and must be reproducible bit for bit (timings
# are in each training stage's stats.json).


def remaining_pct(stats: dict) -> float:
    """Percent of the prunable weights a training run kept, from its stats.json."""
    return 100.0 * stats["weights_kept"] / stats["weights_total"]


def read_metrics(path) -> pd.DataFrame:
    return read_table(path, "metrics table", ("iteration", "split", "loss", "accuracy"))


def level_row(run: dict, variant: str, level: int, train_id: str, metrics: pd.DataFrame, stats: dict) -> dict:
    """Early stopping = the iteration of minimum validation loss (earliest on ties); the
    test accuracy is read there, never used to choose it."""
    val = metrics[metrics.split == "validation"].sort_values("iteration", kind="stable")
    test = metrics[metrics.split == "test"].set_index("iteration")
    best = val.loc[val.loss.idxmin()]
    final = int(metrics.iteration.max())
    at_end = metrics[metrics.iteration == final].set_index("split")
    train_acc = float(at_end.accuracy.get("train", float("nan")))
    test_final = float(test.accuracy.loc[final])
    return {
        "run": run["label"], "lottery": run.get("lottery", run["label"]), "variant": variant, "level": level,
        "train_id": train_id,
        "weights_kept": stats["weights_kept"], "weights_total": stats["weights_total"],
        "weights_remaining_pct": remaining_pct(stats),
        "early_stop_iteration": int(best.iteration), "early_stop_val_loss": float(best.loss),
        "early_stop_test_accuracy": float(test.accuracy.loc[int(best.iteration)]),
        "final_iteration": final, "final_test_accuracy": test_final,
        "final_val_accuracy": float(at_end.accuracy.get("validation", float("nan"))),
        "final_train_accuracy": train_acc, "generalization_gap": train_acc - test_final,
    }


def variants(run: dict) -> dict:
    """Upstream key -> variant name: "trains" is the ticket; every other list is a control or
    a perturbation, named by its key."""
    return {key: "ticket" if key == "trains" else key for key in run if key not in ("label", "lottery")}


def table(runs: list[dict], paths: dict) -> pd.DataFrame:
    """runs: the summary spec's {"label", "lottery", "trains": [ID per level], and per control
    or perturbation its [ID or None per level]}; paths: train ID -> (metrics.parquet, stats.json)."""
    rows = [level_row(run, variant, level, tid, read_metrics(paths[tid][0]), read_json(paths[tid][1]))
            for run in runs for key, variant in variants(run).items()
            for level, tid in enumerate(run[key]) if tid is not None]
    return pd.DataFrame(rows, columns=COLUMNS)


def read_summary(path) -> pd.DataFrame:
    return read_table(path, "summary table", COLUMNS)


AVERAGED = ["weights_remaining_pct", "early_stop_iteration", "early_stop_test_accuracy",
            "final_test_accuracy", "final_train_accuracy", "generalization_gap"]


def replicates(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over the replicates (init and data-order seeds) of each
    lottery, variant and level; `replicates` counts them (std is NaN for one)."""
    grouped = frame.groupby(["lottery", "variant", "level"], sort=False)[AVERAGED]
    out = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    out["replicates"] = grouped.size()
    return out.reset_index()


STYLES = {"ticket": "o-", "random_reinit": "^:", "random_prune": "v:", "small_dense": "d-."}


ACCURACY = ("early_stop_test_accuracy", "test accuracy at early stop (%)", 100.0)
EARLY_STOP = ("early_stop_iteration", "early-stop iteration (min. validation loss)", 1.0)


def draw(ax, frame: pd.DataFrame, column: str, ylabel: str, scale: float) -> None:
    """`column` (mean over replicates, with a +- std band) against weights remaining, one
    line per lottery and variant (the ticket against its controls), and the dense
    network's value (level 0) as a dotted reference line."""
    from lth.report.plots import remaining_axis
    stats = replicates(frame)
    several = stats.lottery.nunique() > 1
    for (lottery, variant), rows in stats.groupby(["lottery", "variant"], sort=False):
        label = f"{lottery} {variant}" if several else variant
        x, y = rows.weights_remaining_pct_mean, scale * rows[f"{column}_mean"]
        line, = ax.plot(x, y, STYLES.get(variant, "s--"), label=label)
        if rows.replicates.max() > 1:  # the band: +- one standard deviation over replicates
            spread = scale * rows[f"{column}_std"].fillna(0)
            ax.fill_between(x, y - spread, y + spread, color=line.get_color(), alpha=0.2)
        dense = rows[rows.level == 0]
        if variant == "ticket" and len(dense):
            ax.axhline(scale * float(dense[f"{column}_mean"].iloc[0]), color=line.get_color(), linestyle=":",
                       linewidth=1, label=f"{lottery} dense" if several else "dense (level 0)")
    remaining_axis(ax)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def plot(frame: pd.DataFrame, path, column: str = ACCURACY[0], ylabel: str = ACCURACY[1],
         scale: float = ACCURACY[2]) -> None:
    from lth.report.plots import _figure, _save
    plt, fig, ax = _figure()
    draw(ax, frame, column, ylabel, scale)
    _save(plt, fig, path)


def overview(frame: pd.DataFrame, path) -> None:
    """The claim on one figure: the ticket against its controls, accuracy at early stop and
    early-stop iteration side by side (the README's figure: `python -m lth summary --figure`)."""
    from lth.report.plots import _figure, _save
    plt, fig, (left, right) = _figure(1, 2, figsize=(11, 4))
    draw(left, frame, *ACCURACY)
    draw(right, frame, *EARLY_STOP)
    _save(plt, fig, path)


def write(frame: pd.DataFrame, out: Path) -> None:
    with atomic_path(out / "summary.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_path(out / "summary.csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(out / "replicates.csv") as tmp:
        replicates(frame).to_csv(tmp, index=False, float_format="%.6g")
    plot(frame, out / "accuracy.png", *ACCURACY)
    plot(frame, out / "early_stop.png", *EARLY_STOP)


def format_table(frame: pd.DataFrame, per_seed: bool = False) -> str:
    """The table as text: with replicates (seeds) the mean ± std of each lottery, variant and
    level (`per_seed`: every training's own row); text columns left-aligned, numbers right."""
    stats = replicates(frame)
    if per_seed or stats.replicates.max() <= 1:
        header = ["run", "variant", "level", "remaining %", "early-stop it", "test acc @es %", "test acc end %",
                  "train acc end %"]
        rows = [[r.run, r.variant, str(r.level), f"{r.weights_remaining_pct:.1f}", str(r.early_stop_iteration),
                 f"{100 * r.early_stop_test_accuracy:.2f}", f"{100 * r.final_test_accuracy:.2f}",
                 f"{100 * r.final_train_accuracy:.2f}"] for r in frame.itertuples()]
    else:
        def both(r, column, scale=100.0, digits=2):
            mean, std = scale * getattr(r, f"{column}_mean"), scale * getattr(r, f"{column}_std")
            return f"{mean:.{digits}f} ± {0.0 if pd.isna(std) else std:.{digits}f}"
        header = ["lottery", "variant", "level", "remaining %", "seeds", "early-stop it", "test acc @es %",
                  "test acc end %", "train acc end %"]
        rows = [[r.lottery, r.variant, str(r.level), f"{r.weights_remaining_pct_mean:.1f}", str(r.replicates),
                 both(r, "early_stop_iteration", 1.0, 0), both(r, "early_stop_test_accuracy"),
                 both(r, "final_test_accuracy"), both(r, "final_train_accuracy")] for r in stats.itertuples()]
    return aligned(header, rows, text_columns=2)


def aligned(header: list, rows: list, text_columns: int) -> str:
    """Columns padded to one width: the first `text_columns` left-aligned, the rest right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = []
    for cells in [header, *rows]:
        lines.append("  ".join(str(c).ljust(w) if i < text_columns else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(cells, widths))).rstrip())
    return "\n".join(lines)