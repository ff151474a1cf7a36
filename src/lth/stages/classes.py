"""`classes`: ticket classes of the sanity checks (Ma et al. 2021; lth.report.classes) from
the summary table and each lottery's learning rate."""
from __future__ import annotations

from lth.plan.ids import Plan, REPLICATE_KEYS, Stage, consumed
from lth.plan.registry import Figure, StageKind, register
from lth.stages import log


def plan(cfg: dict, plan: Plan, make) -> Stage | None:
    """Ticket classes from the summary table; lotteries that differ only in learning rate
    (and replicate seeds) form one group, and groups that differ only in prune.schedule
    one family (Table 3's "prefer IMP")."""
    if not cfg["classes"]["enabled"]:
        return None
    runs = []
    for run in plan.runs:
        def label(leave_out):
            return " ".join(f"{k}={v}" for k, v in run.choices.items()
                            if k not in REPLICATE_KEYS and k not in leave_out) or "imp"
        dense, ticket = run.levels[0]["train"], run.levels[-1]["train"]
        runs.append({"label": run.label, "lr": ticket.settings["train"]["lr"],
                     "dense_lr": dense.settings["train"]["lr"], "group": label(("train.lr",)),
                     "family": label(("train.lr", "prune.schedule")),
                     "schedule": run.choices.get("prune.schedule", cfg["prune"]["schedule"])})
    return make("classes", None, None, {"summary": plan.summary.output("table")}, consumed("classes", cfg),
                layout={"summary": plan.summary.id, "runs": runs})


def run(job) -> None:
    """Ticket classes (lth.report.classes) from the summary table and each run's learning rate."""
    import pandas as pd

    from lth.report import classes
    from lth.store.artifacts import atomic_path
    from lth.report.summary import read_summary
    spec, inputs, out = job.spec, job.inputs, job.dir
    summary = read_summary(inputs["summary"])
    runs = pd.DataFrame(spec["layout"]["runs"]).rename(columns={"label": "run"})
    frame = summary.merge(runs, on="run", how="inner")
    dense = frame.level == 0  # the dense network at the rate it trained at (train.dense_lr)
    frame.loc[dense, "lr"] = frame.loc[dense, "dense_lr"]
    result = classes.classify(frame, spec["settings"].get("classes", {}))
    with atomic_path(out / "classes.csv") as tmp:
        result.to_csv(tmp, index=False, float_format="%.6g")
    classes.plot(result, out / "classes.png")
    for r in result.itertuples():
        log(f"{r.group} level {r.level} ({r.weights_remaining_pct:.1f}%): {r.prize}; prefer small lr "
            f"{r.prefer_small_lr}, prefer IMP {r.prefer_imp}")


register(StageKind(
    # version 2: Table 3's observations (prefer small lr, prefer IMP) and train.dense_lr
    "classes", 2, run, {"table": "classes.csv", "plot": "classes.png"},
    consumes=("classes.min_sparsity", "classes.margin", "classes.tolerance"), resources="analysis",
    plan=plan, needs=("summary",),
    figures={"table": Figure("classes_table.rst", "Ticket classes", "conditions table"),
             "plot": Figure("classes.rst", "Ticket classes", "conditions and prizes")},
    announce="ticket classes: {dir}"))
