"""`instability`: the instability table, verdict and plots over every pair of every lottery
(lth.report.instability)."""
from __future__ import annotations

from lth.plan.ids import Plan, Stage, consumed
from lth.plan.registry import Figure, StageKind, register
from lth.stages import log


def plan(cfg: dict, plan: Plan, make) -> Stage | None:
    """The instability tables and plots over every pair of every lottery."""
    entries, inputs = [], {}
    for run in plan.runs:
        for e in run.pairs:
            entries.append({"run": run.label, "lottery": run.lottery, "level": e["level"], "variant": e["variant"],
                            "k": e["k"], "pair": e["pair"], "path": e["path"].id})
            inputs[f"path_{e['path'].id}"] = e["path"].output("table")
    if not entries:
        return None
    dense = {run.label: run.levels[0]["train"].id for run in plan.runs}
    inputs.update({f"dense_{tid}": plan.stages[tid].output("metrics") for tid in dense.values()})
    # its spec.json: the steps per epoch that make rewind points in epochs iterations (the onset table)
    inputs.update({f"dense_spec_{tid}": plan.stages[tid].output("spec") for tid in dense.values()})
    # not hashed: the summary whose networks these are (the verdict reads it, not the specs of every pair)
    related = {"summary": plan.summary.id} if plan.summary is not None else {}
    return make("instability", None, None, inputs, consumed("instability", cfg),
                layout={"entries": entries, "dense": dense}, related=related)


def run(job) -> None:
    """Instability of every analysed network (mean over its pairs), stable and matching
    flags, the onset of stability and matching along the rewinding sweep (LMC Fig. 9), and
    the plots (lth.report.instability, lth.report.plots)."""
    from pathlib import Path

    import pandas as pd

    from lth.plan.registry import SPEC
    from lth.report import instability, plots
    from lth.store.artifacts import atomic_path, read_json
    from lth.report.summary import read_metrics
    from lth.store.artifacts import read_table
    spec, inputs, out = job.spec, job.inputs, job.dir
    dense_accuracy, steps_per_epoch = {}, {}
    for run, tid in spec["layout"]["dense"].items():
        metrics = read_metrics(inputs[f"dense_{tid}"])
        test = metrics[metrics.split == "test"]
        dense_accuracy[run] = float(test.loc[test.iteration.idxmax(), "accuracy"])
        dense_spec = read_json(inputs.get(f"dense_spec_{tid}", Path(inputs[f"dense_{tid}"]).parent / SPEC))
        steps_per_epoch[run] = dense_spec.get("resolved", {}).get("steps_per_epoch")
    frames = []
    for e in spec["layout"]["entries"]:
        rows = read_table(inputs[f"path_{e['path']}"], "path table", instability.PATH_COLUMNS)
        frames.append(rows.assign(run=e["run"], lottery=e["lottery"], level=e["level"], variant=e["variant"],
                                  k=e["k"], pair=e["pair"], dense_test_accuracy=dense_accuracy[e["run"]]))
    paths = pd.concat(frames, ignore_index=True)
    settings = spec["settings"]["instability"]
    result = instability.summarise(paths, settings["threshold"], settings["matching"])
    with atomic_path(out / "instability.parquet") as tmp:
        paths.to_parquet(tmp, index=False)
    with atomic_path(out / "summary.csv") as tmp:
        result.to_csv(tmp, index=False, float_format="%.6g")
    onsets = instability.onset(paths, settings["threshold"], settings["matching"], steps_per_epoch)
    with atomic_path(out / "onset.csv") as tmp:
        onsets.to_csv(tmp, index=False, float_format="%.6g")
    plots.error_vs_alpha(paths, out / "error_vs_alpha.png")
    plots.instability_vs_k(result, out / "instability_vs_k.png", settings["threshold"])
    plots.instability_vs_remaining(result, out / "instability_vs_remaining.png", settings["threshold"])
    plots.error_vs_k(result.assign(k_iterations=[instability.k_iterations(k, steps_per_epoch.get(run))
                                                 for k, run in zip(result.k, result.run)]),
                     out / "error_vs_k.png")
    plots.onset_vs_remaining(onsets, out / "onset_vs_remaining.png")
    from lth.report import verdict  # the report's front page shows this line beside the summary's verdict
    lotteries = list(dict.fromkeys(result.lottery))
    verdict.write(out / verdict.FILE, [(f"{lottery}: " if len(lotteries) > 1 else "")
                                       + verdict.instability_line(result[result.lottery == lottery])
                                       for lottery in lotteries])
    for r in result.itertuples():
        log(f"{r.run} level {r.level} {r.variant} k={r.k} ({r.weights_remaining_pct:.1f}%): instability "
             f"{100 * r.instability_test:.2f}% ({'stable' if r.stable else 'unstable'}), test acc "
             f"{100 * r.test_accuracy:.2f}% vs dense {100 * r.dense_test_accuracy:.2f}% "
             f"({'matching' if r.matching else 'not matching'})")
    for r in onsets.itertuples():
        medians = {c: getattr(r, f"median_k_{c}") for c in instability.CRITERIA}
        when = {c: "never" if pd.isna(k) else f"{k:g}it" for c, k in medians.items()}
        log(f"{r.run} level {r.level} {r.variant} ({r.weights_remaining_pct:.1f}%), sweep {r.sweep}: median onset "
            f"over {r.pairs} pairs: stable {when['stable']}, matching {when['matching']}, "
            f"stable and matching {when['stable_matching']}")


register(StageKind(
    "instability", 1, run,
    {"table": "instability.parquet", "summary": "summary.csv", "verdict": "verdict.txt",
     "by_alpha": "error_vs_alpha.png", "by_k": "instability_vs_k.png", "by_remaining": "instability_vs_remaining.png",
     "onset": "onset.csv", "error_by_k": "error_vs_k.png", "onset_by_remaining": "onset_vs_remaining.png"},
    consumes=("instability.threshold", "instability.matching"), resources="analysis", plan=plan, needs=("summary",),
    figures={"summary": Figure("instability_table.rst", "Instability", "instability table"),
             "verdict": Figure("instability_verdict.rst", "Instability", "verdict"),
             "by_alpha": Figure("error_vs_alpha.rst", "Instability", "error vs alpha"),
             "by_k": Figure("instability_vs_k.rst", "Instability", "instability vs k"),
             "by_remaining": Figure("instability_vs_remaining.rst", "Instability", "instability vs weights remaining"),
             "onset": Figure("onset_table.rst", "Instability", "onset of stability and matching"),
             "error_by_k": Figure("error_vs_k.rst", "Instability", "test error vs k"),
             "onset_by_remaining": Figure("onset_vs_remaining.rst", "Instability",
                                          "onset of stability and matching vs weights remaining")},
    announce="instability: {dir}"))
