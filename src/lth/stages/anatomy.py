"""`anatomy`: ticket anatomy of one lottery (lth.report.anatomy): initial values of the
survivors, distance moved by kept vs pruned weights, per-unit connectivity, start vs final
magnitude of the survivors (LTH'19 appendix F.5)."""
from __future__ import annotations

from lth.plan.ids import Plan, Run, Stage
from lth.plan.registry import Figure, StageKind, register
from lth.stages import log


def plan(cfg: dict, plan: Plan, make) -> list[Stage]:
    """One ticket anatomy stage per lottery."""
    return [anatomy_of(run, make) for run in plan.runs]


def anatomy_of(run: Run, make) -> Stage:
    """Ticket anatomy of one lottery: every level's start and trained weights and masks."""
    inputs = {"model": run.levels[0]["train"].inputs["model"]}
    for level, stages in enumerate(run.levels):
        train = stages["train"]
        inputs[f"start_{level}"] = train.inputs["start"]
        if "source" in train.inputs:  # a rewind's start is a reference to these weights (and the mask)
            inputs[f"source_{level}"] = train.inputs["source"]
        inputs[f"trained_{level}"] = train.output("weights")
        inputs[f"stats_{level}"] = train.output("stats")
        if "mask" in train.inputs:
            inputs[f"mask_{level}"] = train.inputs["mask"]
    return make("anatomy", None, None, inputs, {}, layout={"trains": [lvl["train"].id for lvl in run.levels]})


def run(job) -> None:
    """Ticket anatomy of one lottery (lth.report.anatomy): initial values of the survivors, distance
    moved by kept vs pruned weights, per-unit connectivity, start vs final magnitude."""
    from lth.report import anatomy
    from lth.report.summary import remaining_pct
    from lth.store.artifacts import atomic_path, read_json
    from lth.store.starts import load_start
    from lth.store.weights import load_mask, load_weights, read_model_info
    spec, inputs, out = job.spec, job.inputs, job.dir
    info = read_model_info(inputs["model"])
    levels = []
    count = len(spec["layout"]["trains"])
    masks_ = [load_mask(inputs[f"mask_{lvl}"], info) if f"mask_{lvl}" in inputs else None for lvl in range(count)]
    for lvl in range(count):
        stats = read_json(inputs[f"stats_{lvl}"])
        levels.append({"level": lvl, "weights_remaining_pct": remaining_pct(stats),
                       "start": load_start(inputs[f"start_{lvl}"], info),
                       "trained": load_weights(inputs[f"trained_{lvl}"], info),
                       "mask": masks_[lvl], "next_mask": masks_[lvl + 1] if lvl + 1 < count else None})
    frame = anatomy.table(levels, info["prunable"])
    with atomic_path(out / "anatomy.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    anatomy.plot_init_histograms(levels, info["prunable"], out / "init_histograms.png")
    anatomy.plot_distance(frame, out / "distance.png")
    anatomy.plot_connectivity(frame, out / "connectivity.png")
    grown = anatomy.magnitudes(levels, info["prunable"])
    with atomic_path(out / "magnitude.csv") as tmp:
        grown.to_csv(tmp, index=False, float_format="%.6g")
    anatomy.plot_magnitude(levels, grown, info["prunable"], out / "magnitude.png")
    moved = frame[(frame.layer == "all") & frame.quantity.isin(["distance_kept", "distance_pruned"])]
    for level, rows in moved.groupby("level"):
        values = dict(zip(rows.quantity, rows.value))
        log(f"anatomy level {level}: mean |theta_T - theta_start| kept {values.get('distance_kept', float('nan')):.4f} "
             f"vs pruned {values.get('distance_pruned', float('nan')):.4f}")
    for r in grown[grown.layer == "all"].itertuples():
        following = "" if r.kept_next_grew_pct != r.kept_next_grew_pct else (  # NaN: the last level
            f"; of those the next pruning keeps {r.kept_next_grew_pct:.1f} %, removes {r.pruned_next_grew_pct:.1f} %")
        log(f"anatomy level {r.level}: mean |w| of survivors {r.start_magnitude:.4f} at the start, "
            f"{r.final_magnitude:.4f} at the end ({r.grew_pct:.1f} % grew{following})")


register(StageKind(
    "anatomy", 1, run,
    {"table": "anatomy.parquet", "init_hist": "init_histograms.png", "distance": "distance.png",
     "connectivity": "connectivity.png", "magnitude": "magnitude.csv", "magnitude_plot": "magnitude.png"},
    resources="analysis", plan=plan,
    figures={"init_hist": Figure("init_histograms.rst", "Ticket anatomy", "initial values of survivors",
                                 per_lottery=True),
             "distance": Figure("distance.rst", "Ticket anatomy", "distance moved", per_lottery=True),
             "connectivity": Figure("connectivity.rst", "Ticket anatomy", "connectivity", per_lottery=True),
             "magnitude_plot": Figure("magnitude.rst", "Ticket anatomy", "start vs final magnitude",
                                      per_lottery=True),
             "magnitude": Figure("magnitude_table.rst", "Ticket anatomy", "start vs final magnitude table",
                                 per_lottery=True)},
    announce="ticket anatomy: {dir}"))
