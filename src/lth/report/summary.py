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


def table(runs: list[dict], paths: dict, accuracy_at: tuple = ()) -> pd.DataFrame:
    """runs: the summary spec's {"label", "lottery", "trains": [ID per level], and per control
    or perturbation its [ID or None per level]}; paths: train ID -> (metrics.parquet, stats.json).
    `accuracy_at`: iterations whose test accuracy become columns test_accuracy_at_<N>it (NaN
    for a training that starts after N: a rewound one)."""
    rows = []
    for run in runs:
        for key, variant in variants(run).items():
            for level, tid in enumerate(run[key]):
                if tid is None:
                    continue
                metrics = read_metrics(paths[tid][0])
                row = level_row(run, variant, level, tid, metrics, read_json(paths[tid][1]))
                test = metrics[metrics.split == "test"].set_index("iteration").accuracy
                row.update({at_column(at): float(test.get(at, float("nan"))) for at in accuracy_at})
                rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS + [at_column(at) for at in accuracy_at])


def at_column(iteration: int) -> str:
    return f"test_accuracy_at_{iteration}it"


# LTH'19 Fig. 3 draws these percentages of weights remaining; the learning curves show the
# levels nearest to them (within a factor 1.25) unless summary.curves names levels.
PAPER_REMAINING = (100.0, 51.3, 21.1, 7.0, 3.6, 1.9)


def curve_levels(frame: pd.DataFrame, wanted=None) -> list[int]:
    import math
    ticket = frame[frame.variant == "ticket"].groupby("level").weights_remaining_pct.mean()
    if wanted:
        return [level for level in wanted if level in ticket.index]
    chosen = []
    for pct in PAPER_REMAINING:
        level = int((ticket.apply(math.log) - math.log(pct)).abs().idxmin())
        if abs(math.log(ticket[level] / pct)) <= math.log(1.25) and level not in chosen:
            chosen.append(level)
    return chosen


def curves(frame: pd.DataFrame, metrics_paths: dict) -> pd.DataFrame:
    """Test accuracy against iteration of every training in the summary table, averaged over
    replicates: lottery, variant, level, weights_remaining_pct, iteration, test_accuracy,
    replicates. `metrics_paths`: train ID -> metrics.parquet."""
    parts = []
    for r in frame.itertuples():
        metrics = read_metrics(metrics_paths[r.train_id])
        test = metrics[metrics.split == "test"][["iteration", "accuracy"]]
        parts.append(test.assign(lottery=r.lottery, variant=r.variant, level=r.level,
                                 weights_remaining_pct=r.weights_remaining_pct))
    long = pd.concat(parts, ignore_index=True)
    keys = ["lottery", "variant", "level", "iteration"]
    out = long.groupby(keys, sort=False).agg(test_accuracy=("accuracy", "mean"), replicates=("accuracy", "size"),
                                             weights_remaining_pct=("weights_remaining_pct", "mean"))
    return out.reset_index()


# One colour per variant in every panel (the ticket orange, its random reinit blue, as in
# accuracy.png); perturbations take the rest of the cycle.
COLOURS = {"ticket": "tab:orange", "random_reinit": "tab:blue", "random_prune": "tab:green",
           "small_dense": "tab:red"}


def plot_curves(lines: pd.DataFrame, levels: list, path) -> None:
    """Learning curves (LTH'19 Figs. 3 and 4): one panel per chosen level and lottery, the
    ticket (solid) against each control and perturbation, the dense network (level 0) as a
    grey reference. The y axis is zoomed to the evaluations after the first one (where the
    differences are); the start points, near chance, lie below it."""
    from lth.report.plots import _figure, _save
    lotteries = list(dict.fromkeys(lines.lottery))
    plt, fig, axes = _figure(len(lotteries), len(levels), figsize=(3.6 * len(levels), 3.2 * len(lotteries)),
                             squeeze=False, sharey=True)
    others = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"][4:] * 10)
    colours = {v: COLOURS.get(v) or next(others) for v in dict.fromkeys(lines.variant)}
    later = lines[lines.iteration > lines.groupby(["lottery", "variant", "level"]).iteration.transform("min")]
    shown = later[later.level.isin(levels)] if len(later) else lines
    for row, lottery in enumerate(lotteries):
        mine = lines[lines.lottery == lottery]
        dense = mine[(mine.level == 0) & (mine.variant == "ticket")]
        for ax, level in zip(axes[row], levels):
            if level != 0 and len(dense):
                ax.plot(dense.iteration, 100 * dense.test_accuracy, color="0.6", lw=1, ls="--", label="dense (level 0)")
            here = mine[mine.level == level]
            for variant, curve in here.groupby("variant", sort=False):
                ax.plot(curve.iteration, 100 * curve.test_accuracy, STYLES.get(variant, "s--"), ms=3,
                        color=colours[variant], label=variant)
            pct = here.weights_remaining_pct.mean() if len(here) else float("nan")
            ax.set_title(f"{lottery + ': ' if len(lotteries) > 1 else ''}level {level} ({pct:.1f} %)", fontsize=9)
            ax.set_xlabel("iteration")
            ax.grid(True, alpha=0.3)
        axes[row][0].set_ylabel("test accuracy (%)")
        axes[row][-1].legend(fontsize=7, loc="lower right")
    if len(shown):
        low, high = 100 * shown.test_accuracy.min(), 100 * shown.test_accuracy.max()
        axes[0][0].set_ylim(low - 0.15 * (high - low) - 0.5, high + 0.1 * (high - low) + 0.5)
    _save(plt, fig, path)


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


def write(frame: pd.DataFrame, out: Path, metrics_paths: dict | None = None, levels=None) -> None:
    with atomic_path(out / "summary.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_path(out / "summary.csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(out / "replicates.csv") as tmp:
        replicates(frame).to_csv(tmp, index=False, float_format="%.6g")
    plot(frame, out / "accuracy.png", *ACCURACY)
    plot(frame, out / "early_stop.png", *EARLY_STOP)
    front_page(out / "accuracy.png", out / "front_page.rst")
    if metrics_paths is not None:
        plot_curves(curves(frame, metrics_paths), curve_levels(frame, levels), out / "learning_curves.png")


def front_page(figure: Path, path: Path) -> None:
    """The report's front page shows the ticket against its controls itself: an RST image with
    the PNG inline as a data URI (the report's own `embeddedfigure` directive leaves a file
    path that the self-contained HTML cannot resolve), included by workflow/report/workflow.rst."""
    import base64
    data = base64.b64encode(Path(figure).read_bytes()).decode()
    # docutils refuses lines over 10,000 characters and drops the whitespace inside a URI
    lines = "".join(f"   {data[i:i + 76]}\n" for i in range(0, len(data), 76))
    with atomic_path(path) as tmp:
        tmp.write_text(f".. image:: data:image/png;base64,\n{lines}   :alt: ticket vs controls: test accuracy at "
                       "early stop\n   :width: 720px\n")


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