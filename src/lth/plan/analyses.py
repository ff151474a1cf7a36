"""The analysis stages of a plan (the workflow's final rules): the summary, R_p, anatomy,
instability pairs and their summary, ticket classes. Torch-free."""
from __future__ import annotations

from lth.plan.chain import snapshot
from lth.plan.ids import CONTROLS, REPLICATE_KEYS, Plan, Run, Stage, consumed, copy_seed, perturbations


def anatomy(cfg: dict, plan: Plan, make) -> list[Stage]:
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
    return make("anatomy", None, {"trains": [lvl["train"].id for lvl in run.levels]}, inputs, {})


def instability_pairs(cfg: dict, run: Run, plan: Plan, make) -> list[dict]:
    """Pairs of copies trained from each analysed network's start weights with other
    data-order seeds, and the interpolation stage of each pair.

    A copy is the network's own training stage with train.seed replaced, so it is cached
    like any training (a new pair adds jobs; the existing pairs keep their IDs)."""
    ic = cfg["instability"]
    point = cfg["rewind"]["to"]
    out = []
    for level in ic["levels"]:
        if level >= len(run.levels):
            continue  # beyond `levels`: skipped (lth.plan.config.notes says so)
        stages = run.levels[level]
        networks = []  # (variant, k, template training stage's kind-free fields)
        if level == 0:
            dense = stages["train"]
            own = "0it" if point in ("reset", "continue") else point
            for k in dict.fromkeys("0it" if p == "0ep" else p for p in [own, *ic["points"]]):
                if k == "0it":
                    networks.append(("ticket", "0it", dense.settings, dense.upstream, dense.inputs))
                    continue
                snap = snapshot(cfg, plan.stages[dense.upstream["start"]], k, make)
                networks.append(("ticket", k, {**dense.settings, "rewind": {"to": k}}, {"start": snap.id},
                                 {**dense.inputs, "start": snap.output("weights")}))
        else:
            k = "0it" if point == "reset" else point
            for variant in ic["variants"]:
                t = stages["train" if variant == "ticket" else variant]
                networks.append((variant, "0it" if variant == "random_reinit" else k,
                                 t.settings, t.upstream, t.inputs))
        for variant, k, settings, upstream, inputs in networks:
            for pair in range(ic["pairs"]):
                copies = [make("train", level, upstream, inputs,
                               {**settings, "train": {**settings["train"], "seed": copy_seed(cfg, pair, c)}})
                          for c in (0, 1)]
                path_inputs = {"model": inputs["model"], "a": copies[0].output("weights"),
                               "b": copies[1].output("weights")}
                if "mask" in inputs:
                    path_inputs["mask"] = inputs["mask"]
                path = make("interpolate", level, {"a": copies[0].id, "b": copies[1].id}, path_inputs,
                            consumed("interpolate", cfg))
                out.append({"level": level, "variant": variant, "k": k, "pair": pair, "path": path})
    return out


def instability(cfg: dict, plan: Plan, make) -> Stage | None:
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
    return make("instability", None, {"entries": entries, "dense": dense}, inputs, consumed("instability", cfg))


def summary(cfg: dict, plan: Plan, make) -> Stage:
    """The per-level table of every training of every lottery: tickets, controls, perturbations."""
    variant_keys = [c for c in CONTROLS if cfg["controls"][c]] + [name for name, _, _ in perturbations(cfg)]
    trains = sorted({lvl[k].id: lvl[k] for run in plan.runs for lvl in run.levels
                     for k in ("train", *variant_keys) if k in lvl}.values(), key=lambda s: s.id)
    upstream = {"runs": [{"label": run.label, "lottery": run.lottery,
                          "trains": [lvl["train"].id for lvl in run.levels],
                          **{c: [lvl[c].id if c in lvl else None for lvl in run.levels] for c in variant_keys}}
                         for run in plan.runs]}
    inputs = {f"{t.id}_{name}": t.output(name) for t in trains for name in ("metrics", "stats")}
    return make("summary", None, upstream, inputs, consumed("summary", cfg))


def correlation(cfg: dict, plan: Plan, make) -> Stage:
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
    return make("correlation", None, runs, inputs,
                consumed("correlation", cfg, ranking="survivors", consecutive=True))


def classes(cfg: dict, plan: Plan, make) -> Stage | None:
    """Ticket classes from the summary table; lotteries that differ only in learning rate
    (and replicate seeds) form one group."""
    if not cfg["classes"]["enabled"]:
        return None
    runs = [{"label": run.label, "lr": run.levels[0]["train"].settings["train"]["lr"],
             "group": " ".join(f"{k}={v}" for k, v in run.choices.items()
                               if k not in REPLICATE_KEYS and k != "train.lr") or "imp"}
            for run in plan.runs]
    return make("classes", None, {"summary": plan.summary.id, "runs": runs},
                {"summary": plan.summary.output("table")}, consumed("classes", cfg))
