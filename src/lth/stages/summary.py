"""`summary`: the per-level table of every training of every lottery (tickets, controls,
perturbations), its plots and its verdict (lth.report.summary, lth.report.verdict)."""
from __future__ import annotations

from lth.plan.ids import CONTROLS, Plan, Stage, consumed, perturbations
from lth.plan.registry import Figure, StageKind, register
from lth.stages import by_training, log, pretrain, rewind


def plan(cfg: dict, plan: Plan, make) -> Stage:
    """The per-level table of every training of every lottery: tickets, controls, perturbations."""
    variant_keys = [c for c in CONTROLS if cfg["controls"][c]] + [name for name, _, _ in perturbations(cfg)] \
        + ([rewind.RESET_AT_END] if cfg["rewind"]["reset_at_end"] else []) \
        + ([pretrain.VARIANT] if cfg["pretrain"]["sparse"] else [])
    trains = sorted({lvl[k].id: lvl[k] for run in plan.runs for lvl in run.levels
                     for k in ("train", *variant_keys) if k in lvl}.values(), key=lambda s: s.id)
    layout = {"runs": [{"label": run.label, "lottery": run.lottery,
                          "trains": [lvl["train"].id for lvl in run.levels],
                          **{c: [lvl[c].id if c in lvl else None for lvl in run.levels] for c in variant_keys}}
                         for run in plan.runs]}
    inputs = {f"{t.id}_{name}": t.output(name) for t in trains for name in ("metrics", "stats")}
    from lth.nn import data
    settings = consumed("summary", cfg)
    classes = data.source(cfg["data"]["dataset"]).num_classes
    if classes != 10:  # the verdict's chance level; hashed only then, so earlier IDs hold
        settings["num_classes"] = classes
    return make("summary", None, None, inputs, settings, layout=layout)



def run(job) -> dict:
    """The per-level table of every training of every lottery, its plots (lth.report.summary) and
    its verdict (lth.report.verdict: the ticket against each control, the sparsest level matching
    the dense network); inputs are named <train ID>_metrics and <train ID>_stats."""
    from lth.report import summary, verdict
    paths = by_training(job.inputs)
    settings = job.spec["settings"].get("summary", {})
    frame = summary.table(job.spec["layout"]["runs"], {tid: (p["metrics"], p["stats"]) for tid, p in paths.items()},
                          accuracy_at=at_iterations(settings.get("accuracy_at", [])))
    summary.write(frame, job.dir, {tid: p["metrics"] for tid, p in paths.items()}, settings.get("curves"))
    said = verdict.lines(frame, chance=1 / job.spec["settings"].get("num_classes", 10))
    verdict.write(job.dir / verdict.FILE, said)
    log(summary.format_table(frame))
    log("\n".join(said))
    return {"rows": len(frame)}


def at_iterations(values: list) -> list[int]:
    """summary.accuracy_at in iterations (the schema allows iterations only: 30000it or 30000)."""
    return sorted(int(str(v).removesuffix("it")) for v in values)


register(StageKind(
    "summary", 1, run,
    {"table": "summary.parquet", "csv": "summary.csv", "replicates": "replicates.csv",
     "plot": "accuracy.png", "early_stop": "early_stop.png", "curves": "learning_curves.png", "verdict": "verdict.txt",
     "front": "front_page.rst"},
    consumes=("summary.accuracy_at", "summary.curves"), resources="analysis", plan=plan,
    figures={"plot": Figure("accuracy.rst", "Accuracy", "ticket vs controls: test accuracy at early stop"),
             "early_stop": Figure("early_stop.rst", "Accuracy", "ticket vs controls: early-stop iteration"),
             "curves": Figure("learning_curves.rst", "Accuracy", "learning curves per level"),
             "verdict": Figure("verdict.rst", "Accuracy", "verdict")},
    announce="summary: {dir}  (print it with: python -m lth summary {dir})"))
