"""`samemask`: Liu et al.'s same-mask comparison (ICML 2021, Figs. 6-7; lth.report.samemask)
from the summary table: pruning & fine-tuning, the winning ticket's init and a random
reinit on each level's own mask, one panel per mask generator. Planned when some lottery
trains two of them: `controls.fine_tune` (or a continue lottery with rewind.reset_at_end)
beside the ticket, and `controls.random_reinit` for the third."""
from __future__ import annotations

from lth.plan.ids import Plan, Stage, consumed
from lth.plan.registry import Figure, StageKind, register
from lth.stages import log


def plan(cfg: dict, plan: Plan, make) -> Stage | None:
    rewind_of = {}
    for run in plan.runs:
        pruned = run.levels[1:]
        if any("fine_tune" in lvl or "reset_at_end" in lvl for lvl in pruned):
            rewind_of[run.lottery] = run.choices.get("rewind.to", cfg["rewind"]["to"])
    if not rewind_of:
        return None
    return make("samemask", None, None, {"summary": plan.summary.output("table")}, consumed("samemask", cfg),
                layout={"summary": plan.summary.id, "rewind": dict(sorted(rewind_of.items()))})


def run(job) -> None:
    from lth.report import samemask
    from lth.report.summary import read_summary
    from lth.store.artifacts import atomic_path
    result = samemask.table(read_summary(job.inputs["summary"]), job.spec["layout"]["rewind"])
    with atomic_path(job.dir / "same_mask.csv") as tmp:
        result.to_csv(tmp, index=False, float_format="%.6g")
    samemask.plot(result, job.dir / "same_mask.png")
    for r in samemask.differences(result).itertuples(index=False):
        log(f"{r.lottery} level {r.level} ({r.weights_remaining_pct:.1f}%): fine-tuning minus ticket init "
            f"{r.fine_tuning_minus_ticket_pp:+.2f} pp, ticket init minus reinit {r.ticket_minus_reinit_pp:+.2f} pp")


register(StageKind(
    "samemask", 1, run, {"table": "same_mask.csv", "plot": "same_mask.png"},
    resources="analysis", plan=plan, needs=("summary",),
    figures={"plot": Figure("same_mask.rst", "Accuracy", "same mask: fine-tuning, ticket init, reinit")},
    announce="same-mask comparison: {dir}"))
