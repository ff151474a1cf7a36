"""`perturbation`: perturbation strength against accuracy (Frankle, Schwab & Morcos 2020,
Fig. 8; lth.report.perturbation): each perturbation's effective standard deviation (of
perturbed minus unperturbed start over the surviving weights) against the mean test accuracy
over seeds of the networks trained from it, with Pearson r and p per lottery and level.

Planned only when perturbations are configured (`perturb.kinds`), so other experiments keep
their jobs. Seeds are the replicates of a lottery: a list of init.seed or train.seed values
runs the lottery, its perturbations and their trainings once per seed."""
from __future__ import annotations

from lth.plan.ids import Plan, Stage, perturbations
from lth.plan.registry import Figure, StageKind, register
from lth.stages import by_training, log

TICKET = "ticket"  # lth.report.perturbation.TICKET (that module imports pandas)


def _seed(plan: Plan, run) -> str:
    """A replicate's seeds, e.g. "init.seed=0 train.seed=1"."""
    dense = run.levels[0]["train"]
    init = plan.stages[dense.upstream["start"]]
    return f"init.seed={init.settings['init']['seed']} train.seed={dense.settings['train']['seed']}"


def plan(cfg: dict, plan: Plan, make) -> Stage | None:
    """One stage over every lottery's perturbed levels; None without perturbations.
    Inputs: each perturbation's start (<perturb ID>_perturbed), the unperturbed start as the
    rewind's source weights and mask (<rewind ID>_source, <rewind ID>_mask: the files its
    start.json names, read directly), and the metrics and stats of each perturbation's
    training and of the level's ticket (<train ID>_metrics, <train ID>_stats)."""
    names = {name: (kind, noise) for name, kind, noise in perturbations(cfg)}
    if not names:
        return None
    entries, inputs = [], {}
    for run in plan.runs:
        seed = _seed(plan, run)
        for level, stages in enumerate(run.levels):
            for variant in (v for v in stages if v in names):
                trained = stages[variant]
                perturbed = plan.stages[trained.upstream["start"]]
                rewind = plan.stages[perturbed.upstream["start"]]
                kind, noise = names[variant]
                entries.append({"lottery": run.lottery, "run": run.label, "seed": seed, "level": level,
                                "variant": variant, "kind": kind, "noise": noise, "perturb": perturbed.id,
                                "rewind": rewind.id, "train": trained.id, "ticket": stages["train"].id})
                inputs.setdefault("model", perturbed.inputs["model"])
                inputs[f"{perturbed.id}_perturbed"] = perturbed.output("start")
                inputs[f"{rewind.id}_source"] = perturbed.inputs["source"]
                inputs[f"{rewind.id}_mask"] = perturbed.inputs["mask"]
                for train in (trained, stages["train"]):
                    inputs[f"{train.id}_metrics"] = train.output("metrics")
                    inputs[f"{train.id}_stats"] = train.output("stats")
    if not entries:  # perturb.levels beyond the levels: nothing was perturbed
        return None
    return make("perturbation", None, None, inputs, {}, layout={"entries": entries})


def run(job) -> None:
    """The table (per seed and per variant mean), r and p per lottery and level, the figure."""
    from lth.report import perturbation
    from lth.report.summary import level_row, read_metrics
    from lth.store.artifacts import atomic_path, read_json
    from lth.store.weights import load_mask, load_weights, masked, read_model_info
    inputs = dict(job.inputs)
    info = read_model_info(inputs.pop("model"))
    files = by_training(inputs)
    accuracy: dict = {}

    def trained(entry: dict, tid: str, variant: str) -> dict:
        if tid not in accuracy:
            row = level_row({"label": entry["run"], "lottery": entry["lottery"]}, variant, entry["level"], tid,
                            read_metrics(files[tid]["metrics"]), read_json(files[tid]["stats"]))
            accuracy[tid] = {k: row[k] for k in ("weights_remaining_pct", "final_test_accuracy",
                                                  "early_stop_test_accuracy")}
        return accuracy[tid]

    rows, loaded, tickets = [], (None, None, None), set()
    for entry in job.spec["layout"]["entries"]:
        head = {"lottery": entry["lottery"], "level": entry["level"], "seed": entry["seed"]}
        if entry["rewind"] != loaded[0]:  # entries come level by level: each start is read once
            mask = load_mask(files[entry["rewind"]]["mask"], info)
            loaded = (entry["rewind"], masked(load_weights(files[entry["rewind"]]["source"], info), mask), mask)
        _, start, mask = loaded
        moved = perturbation.effective(load_weights(files[entry["perturb"]]["perturbed"], info), start, mask)
        acc = trained(entry, entry["train"], entry["variant"])
        rows.append({**head, "weights_remaining_pct": acc["weights_remaining_pct"], "variant": entry["variant"],
                     "kind": entry["kind"], "noise": entry["noise"], **moved,
                     "test_accuracy": acc["final_test_accuracy"],
                     "early_stop_test_accuracy": acc["early_stop_test_accuracy"]})
        if entry["ticket"] not in tickets:  # the unperturbed reference of this seed and level
            tickets.add(entry["ticket"])
            acc = trained(entry, entry["ticket"], TICKET)
            rows.append({**head, "weights_remaining_pct": acc["weights_remaining_pct"], "variant": TICKET,
                         "kind": "unperturbed", "noise": None, "effective_std": 0.0, "effective_mean": 0.0,
                         "test_accuracy": acc["final_test_accuracy"],
                         "early_stop_test_accuracy": acc["early_stop_test_accuracy"]})
    frame = perturbation.table(rows)
    result = perturbation.correlations(frame)
    with atomic_path(job.dir / "perturbation.csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(job.dir / "correlation.csv") as tmp:
        result.to_csv(tmp, index=False, float_format="%.6g")
    perturbation.plot(frame, result, job.dir / "perturbation_strength.png")
    for row in result.itertuples():
        log(f"perturbation strength vs accuracy, {row.lottery} level {row.level}: {perturbation.describe(row)}")


register(StageKind(
    "perturbation", 1, run,
    {"table": "perturbation.csv", "correlation": "correlation.csv", "plot": "perturbation_strength.png"},
    resources="analysis", plan=plan,
    figures={"plot": Figure("perturbation_strength.rst", "Perturbations", "effective std vs accuracy"),
             "correlation": Figure("perturbation_correlation.rst", "Perturbations", "r and p per level")},
    announce="perturbation strength vs accuracy: {dir}"))
