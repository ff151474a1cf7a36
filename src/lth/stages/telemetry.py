"""`telemetry`: the telemetry of one lottery's watched trainings (`telemetry.levels`) side by
side: the early-phase paper's Fig. 3 panels and a table of when the signs settle
(lth.report.telemetry). The trainings record it themselves (lth.nn.telemetry); this stage
reads each one's telemetry.parquet beside its stats.json, verified against its record."""
from __future__ import annotations

from lth.plan.ids import Plan, Stage
from lth.plan.registry import Figure, StageKind, register
from lth.stages import log


def plan(cfg: dict, plan: Plan, make) -> list[Stage] | None:
    """One stage per lottery with a watched training; none when telemetry is off."""
    stages = []
    for run in plan.runs if cfg["telemetry"]["levels"] else []:
        watched = [(level, variant, stage) for level, stages_ in enumerate(run.levels)
                   for variant, stage in stages_.items()
                   if stage.kind == "train" and "telemetry" in stage.settings]
        if not watched:
            continue
        inputs = {f"{stage.id}_stats": stage.output("stats") for _, _, stage in watched}
        layout = {"run": run.label, "lottery": run.lottery,
                  "trains": [{"level": level, "variant": "ticket" if variant == "train" else variant, "train": s.id}
                             for level, variant, s in watched]}
        stages.append(make("telemetry", None, None, inputs, {}, layout=layout))
    return stages or None


def run(job) -> dict:
    from lth.nn.telemetry import COLUMNS
    from lth.report import telemetry
    from lth.report.summary import remaining_pct
    from lth.stages import by_training
    from lth.stages.train import TELEMETRY
    from lth.store.artifacts import atomic_path, read_json, read_table
    from lth.store.records import verify
    layout, paths = job.spec["layout"], by_training(job.inputs)
    networks = []
    for entry in layout["trains"]:
        stats_path = paths[entry["train"]]["stats"]
        table_path = stats_path.parent / TELEMETRY
        verify([table_path])  # in the training's record, not a Snakemake output: checked here
        networks.append({"run": layout["run"], "lottery": str(layout["lottery"]), "level": entry["level"],
                         "variant": entry["variant"], "train": entry["train"],
                         "weights_remaining_pct": remaining_pct(read_json(stats_path)),
                         "table": read_table(table_path, "telemetry table", COLUMNS)})
    frame = telemetry.summarise(networks)
    with atomic_path(job.dir / "telemetry.csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    telemetry.plot(networks, job.dir / "telemetry.png", f"Telemetry of {layout['run']} "
                   "(Frankle, Schwab & Morcos 2020, Fig. 3)")
    for r in frame.itertuples():
        log(f"telemetry level {r.level} {r.variant} ({r.weights_remaining_pct:.1f} %): "
            f"{100 * r.sign_changed_init_final:.1f} % of signs differ from theta_0 at the end, settled from "
            f"iteration {r.signs_settle_iteration}; L2 to theta_0 {r.l2_init_final:.3f}, cosine {r.cos_init_final:.3f}")
    return {"networks": len(networks)}


register(StageKind(
    "telemetry", 1, run, {"table": "telemetry.csv", "plot": "telemetry.png"},
    resources="analysis", plan=plan,
    figures={"table": Figure("telemetry_table.rst", "Telemetry", "when the signs settle", per_lottery=True),
             "plot": Figure("telemetry.rst", "Telemetry", "early-phase telemetry (Fig. 3)", per_lottery=True)},
    announce="telemetry: {dir}"))
