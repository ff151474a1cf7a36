"""`interpolate`: one instability pair (linear mode connectivity, Frankle et al. 2020): two
copies of a network trained from the same start with other data orders, and error and loss
along the straight line between them (lth.report.instability)."""
from __future__ import annotations

from lth.plan.ids import Plan, Run, consumed, copy_seed
from lth.plan.registry import StageKind, register
from lth.stages import log, train

COPY = "instability_copy"  # the variant of a pair's two trainings
RESET = ", schedule reset"  # the suffix of a network whose copies train T steps from step 0 (LMC Fig. 4)


def pairs(cfg: dict, run: Run, plan: Plan, make) -> list[dict]:
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
                    networks.append(("ticket", "0it", dense.settings, dense.upstream, dense.inputs, dense.lottery))
                    continue
                snap = train.snapshot(cfg, plan.stages[dense.upstream["start"]], k, make, dense.inputs["model"])
                networks.append(("ticket", k, {**dense.settings, "rewind": {"to": k}}, {"start": snap.id},
                                 {**dense.inputs, "start": snap.output("weights")}, {**dense.lottery, "rewind.to": k}))
        else:
            k = "0it" if point == "reset" else point
            for variant in ic["variants"]:
                t = stages["train" if variant == "ticket" else variant]
                networks.append((variant, "0it" if variant == "random_reinit" else k,
                                 t.settings, t.upstream, t.inputs, t.lottery))
        # LMC Fig. 4: copies of a network at k > 0 also trained T steps with the schedule reset
        resets = [(f"{v}{RESET}", k, {**s, "schedule": "reset"}, u, i, lot) for v, k, s, u, i, lot in networks
                  if "reset" in ic["schedule"] and k != "0it"]
        kept = networks if "remaining" in ic["schedule"] else [n for n in networks if n[1] == "0it"]
        for variant, k, settings, upstream, inputs, lottery in kept + resets:
            for pair in range(ic["pairs"]):
                copies = [make("train", level, upstream, inputs,
                               {**settings, "train": {**settings["train"], "seed": copy_seed(cfg, pair, c)}},
                               variant=COPY, lottery=lottery)  # the network's lottery, not the copy's seed
                          for c in (0, 1)]
                path_inputs = {"model": inputs["model"], "a": copies[0].output("weights"),
                               "b": copies[1].output("weights")}
                if "mask" in inputs:
                    path_inputs["mask"] = inputs["mask"]
                path = make("interpolate", level, {"a": copies[0].id, "b": copies[1].id}, path_inputs,
                            consumed("interpolate", cfg))
                out.append({"level": level, "variant": variant, "k": k, "pair": pair, "path": path})
    return out


def run(job) -> None:
    """One instability pair (lth.report.instability): error and loss along the straight line between
    the pair's trained copies, on the test set and a fixed training subset, recomputing
    BatchNorm statistics at every alpha for models that have BatchNorm."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from lth.nn import devices, models
    from lth.nn.training import Split
    from lth.report import instability
    from lth.store.artifacts import atomic_path
    from lth.store.weights import check_masked, load_mask, load_weights, read_model_info, weight_counts
    spec, inputs, out = job.spec, job.inputs, job.dir
    settings = spec["settings"]
    device, lease = job.start_torch(settings["train"].get("precision", "fp32"))
    info = read_model_info(inputs["model"])
    a, b = load_weights(inputs["a"], info), load_weights(inputs["b"], info)
    mask = load_mask(inputs["mask"], info) if "mask" in inputs else None
    if mask is not None:
        check_masked(inputs["a"], a, mask, inputs["mask"])
        check_masked(inputs["b"], b, mask, inputs["mask"])
    kept, total = weight_counts(info, mask)
    splits = job.splits(info, device)
    ic = settings["instability"]
    subset = Split(splits["train"].x[:ic["train_subset"]], splits["train"].y[:ic["train_subset"]])
    model = models.from_info(info).to(device)
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    batch = settings["train"]["batch_size"]
    bn_inputs = [splits["train"].x[i * batch:(i + 1) * batch] for i in range(ic["bn_batches"])] if has_bn else None
    log(f"interpolate {spec['id']} level {spec['level']}: {ic['alphas']} points on {device} "
         f"({devices.describe(device, lease)}), batchnorm recomputed: {has_bn}")
    job.cooperate()  # from here a gone snakemake stops the path at its next point
    rows = instability.evaluate_path(model, a, b, instability.alphas(ic["alphas"]),
                                     {"test": splits["test"], "train": subset}, bn_inputs,
                                     settings["train"].get("precision", "fp32"), job.stop)
    table = pa.Table.from_pylist([{**r, "weights_remaining_pct": 100 * kept / total, "bn_recomputed": has_bn}
                                  for r in rows])
    with atomic_path(out / "path.parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    test = [r["error"] for r in rows if r["split"] == "test"]
    log(f"interpolate {spec['id']}: test error {test[0]:.4f} .. max {max(test):.4f} .. {test[-1]:.4f}, "
         f"instability {instability.barrier(test):.4f}")


register(StageKind("interpolate", 1, run, {"table": "path.parquet"},
                   consumes=train.DATA + ("train.batch_size", "train.precision", "instability.alphas",
                                          "instability.train_subset", "instability.bn_batches"),
                   resources="train"))
