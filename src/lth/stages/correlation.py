"""`correlation`: the weight correlation indicator R_p (lth.report.correlation) of every
ticket training (its start against its result) and of consecutive levels' trained weights."""
from __future__ import annotations

from lth.plan.ids import Plan, Stage, consumed
from lth.plan.registry import Figure, StageKind, register
from lth.stages import by_training, log


def plan(cfg: dict, plan: Plan, make) -> Stage:
    """R_p(theta_0, theta_T) of every ticket training (its start weights against its result),
    and of consecutive levels' trained weights."""
    tickets = sorted({lvl["train"].id: lvl["train"] for run in plan.runs for lvl in run.levels}.values(),
                     key=lambda s: s.id)
    inputs = {f"{t.id}_{name}": path for t in tickets
              for name, path in (("start", t.inputs["start"]), ("source", t.inputs.get("source")),
                                 ("trained", t.output("weights")), ("model", t.inputs["model"]),
                                 ("stats", t.output("stats")), ("mask", t.inputs.get("mask")))
              if path is not None}
    runs = {"runs": [{"label": run.label, "trains": [lvl["train"].id for lvl in run.levels]} for run in plan.runs]}
    # "ranking": what R_p ranks in a pruned level (its survivors), so the ID changes with it
    # "consecutive": R_p of consecutive levels' trained weights is computed too
    return make("correlation", None, None, inputs,
                consumed("correlation", cfg, ranking="survivors", consecutive=True), layout=runs)



def run(job) -> None:
    """R_p (lth.report.correlation) at each p of analysis.rp_fractions, over the prunable layers and
    per layer, for every ticket training of every lottery:
    - "theta_0 vs theta_T": its start weights (theta_0 masked; theta_k when rewound) against
      its trained weights;
    - "consecutive levels" (level L >= 1): level L-1's trained weights against level L's, the
      two weight sets whose magnitudes chose consecutive masks (a mask itself is binary and
      has no top-p set, so R_p of two masks is undefined).
    A pruned level ranks only its surviving weights (level L's mask in both comparisons).
    Inputs are named <train ID>_<start|source|trained|model|stats|mask> (no mask at level 0;
    source: the weights a rewind's start.json names, read through it by load_start)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lth.report import correlation, plots
    from lth.report.summary import remaining_pct
    from lth.store.artifacts import atomic_path, read_json
    from lth.store.starts import load_start
    from lth.store.weights import load_mask, load_weights, read_model_info
    spec, out = job.spec, job.dir
    trainings = by_training(job.inputs)
    ps = spec["settings"]["analysis"]["rp_fractions"]
    cache = {}

    def load(tid):
        if tid not in cache:
            paths = trainings[tid]
            info = read_model_info(paths["model"])
            stats = read_json(paths["stats"])
            cache[tid] = {"info": info, "remaining": remaining_pct(stats),
                          "start": load_start(paths["start"], info),
                          "trained": load_weights(paths["trained"], info),
                          "mask": load_mask(paths["mask"], info) if "mask" in paths else None}
        return cache[tid]

    def compare(a, b, current):
        return [{"weights_remaining_pct": current["remaining"], **row}
                for row in correlation.table(a, b, ps, current["info"]["prunable"], current["mask"])]

    by_pair, rows = {}, []  # lotteries share trainings (the dense run at least): compute each once
    for run in spec["layout"]["runs"]:
        for level, tid in enumerate(run["trains"]):
            pairs = [("theta_0 vs theta_T", None, tid)]
            if level > 0 and spec["settings"].get("consecutive"):
                pairs.append(("consecutive levels", run["trains"][level - 1], tid))
            for comparison, before, after in pairs:
                key = (comparison, before, after)
                if key not in by_pair:
                    current = load(after)
                    first = current["start"] if before is None else load(before)["trained"]
                    by_pair[key] = compare(first, current["trained"], current)
                rows += [{"run": run["label"], "level": level, "train_id": tid, "comparison": comparison, **row}
                         for row in by_pair[key]]
    table = pa.Table.from_pylist(rows)
    with atomic_path(out / "correlation.parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    frame = table.to_pandas()
    plots.rp_vs_p(frame[frame.comparison == "theta_0 vs theta_T"], out / "rp_vs_p.png")
    plots.rp_vs_remaining(frame, out / "rp_vs_remaining.png")
    dense = frame[(frame.level == 0) & (frame.layer == "all")]
    log("R_p(theta_0, theta_T) of the dense run: " +
         ", ".join(f"p={r.p:g}: {r.r_p:.3f}" for r in dense.drop_duplicates("p").itertuples()))


register(StageKind(
    "correlation", 1, run,
    {"table": "correlation.parquet", "by_p": "rp_vs_p.png", "by_remaining": "rp_vs_remaining.png"},
    consumes=("analysis.rp_fractions",), resources="analysis", plan=plan,
    figures={"by_p": Figure("rp_vs_p.rst", "Weight correlation", "R_p vs p"),
             "by_remaining": Figure("rp_vs_remaining.rst", "Weight correlation", "R_p vs weights remaining")},
    announce="weight correlation: {dir}"))
