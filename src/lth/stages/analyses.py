"""The analysis stages (the workflow's final rules), given their job (lth.runtime.job.StageJob):
the summary, weight correlation, instability pairs and their summary, ticket anatomy,
ticket classes.

Like lth.stages.common, each reads its inputs, calls the logic module (lth.report.summary,
lth.report.correlation, lth.report.instability, lth.report.anatomy, lth.report.classes) and writes its outputs
atomically. Only `run_interpolate` imports torch.
"""
from __future__ import annotations


from lth.store.artifacts import read_json, read_table
from lth.report.summary import remaining_pct
from lth.stages.common import (_log, check_data, check_masked, load_mask, load_start, load_weights, read_model_info,
                     weight_counts)


def _by_training(inputs: dict) -> dict:
    """Inputs named <train ID>_<what> as train ID -> {what: path}."""
    out: dict = {}
    for name, path in inputs.items():
        tid, _, what = name.rpartition("_")
        out.setdefault(tid, {})[what] = path
    return out


def run_summary(job) -> dict:
    """The per-level table of every training of every lottery, its plots (lth.report.summary) and
    its verdict (lth.report.verdict: the ticket against each control, the sparsest level matching
    the dense network); inputs are named <train ID>_metrics and <train ID>_stats."""
    from lth.report import summary, verdict
    paths = _by_training(job.inputs)
    frame = summary.table(job.spec["upstream"]["runs"], {tid: (p["metrics"], p["stats"]) for tid, p in paths.items()})
    summary.write(frame, job.dir)
    said = verdict.lines(frame)
    verdict.write(job.dir / verdict.FILE, said)
    _log(summary.format_table(frame))
    _log("\n".join(said))
    return {"rows": len(frame)}


def run_correlation(job) -> None:
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
    from lth.store.artifacts import atomic_path
    spec, out = job.spec, job.dir
    trainings = _by_training(job.inputs)
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
    for run in spec["upstream"]["runs"]:
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
    _log("R_p(theta_0, theta_T) of the dense run: " +
         ", ".join(f"p={r.p:g}: {r.r_p:.3f}" for r in dense.drop_duplicates("p").itertuples()))


def run_interpolate(job) -> None:
    """One instability pair (lth.report.instability): error and loss along the straight line between
    the pair's trained copies, on the test set and a fixed training subset, recomputing
    BatchNorm statistics at every alpha for models that have BatchNorm."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from lth.nn import data, devices, models, numerics
    from lth.report import instability
    from lth.store.artifacts import atomic_path
    from lth.nn.training import Split, prepare
    spec, inputs, out = job.spec, job.inputs, job.dir
    threads, device, data_dir = job.execution.threads, job.execution.device, job.execution.data_dir
    if threads:
        torch.set_num_threads(threads)
    device, lease = devices.claim(device, job.execution.gpu_slots)
    numerics.configure(spec["settings"]["train"].get("precision", "fp32"), job.execution.deterministic)
    settings = spec["settings"]
    info = read_model_info(inputs["model"])
    a, b = load_weights(inputs["a"], info), load_weights(inputs["b"], info)
    mask = load_mask(inputs["mask"], info) if "mask" in inputs else None
    if mask is not None:
        check_masked(inputs["a"], a, mask, inputs["mask"])
        check_masked(inputs["b"], b, mask, inputs["mask"])
    kept, total = weight_counts(info, mask)
    dataset = data.load(settings["data"]["dataset"], data_dir)
    check_data(dataset, info, settings, data_dir)
    splits = prepare(dataset, settings["data"]["validation_size"], settings["data"]["split_seed"], device)
    ic = settings["instability"]
    subset = Split(splits["train"].x[:ic["train_subset"]], splits["train"].y[:ic["train_subset"]])
    model = models.build(info["name"], width=info.get("width", 1.0)).to(device)
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    batch = settings["train"]["batch_size"]
    bn_inputs = [splits["train"].x[i * batch:(i + 1) * batch] for i in range(ic["bn_batches"])] if has_bn else None
    _log(f"interpolate {spec['id']} level {spec['level']}: {ic['alphas']} points on {device} "
         f"({devices.describe(device, lease)}), batchnorm recomputed: {has_bn}")
    rows = instability.evaluate_path(model, a, b, instability.alphas(ic["alphas"]),
                                     {"test": splits["test"], "train": subset}, bn_inputs,
                                     settings["train"].get("precision", "fp32"), job.stop)
    table = pa.Table.from_pylist([{**r, "weights_remaining_pct": 100 * kept / total, "bn_recomputed": has_bn}
                                  for r in rows])
    with atomic_path(out / "path.parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    test = [r["error"] for r in rows if r["split"] == "test"]
    _log(f"interpolate {spec['id']}: test error {test[0]:.4f} .. max {max(test):.4f} .. {test[-1]:.4f}, "
         f"instability {instability.barrier(test):.4f}")


def run_instability(job) -> None:
    """Instability of every analysed network (mean over its pairs), stable and matching
    flags, and the three plots (lth.report.instability, lth.report.plots)."""
    import pandas as pd

    from lth.report import instability, plots
    from lth.store.artifacts import atomic_path
    from lth.report.summary import read_metrics
    spec, inputs, out = job.spec, job.inputs, job.dir
    dense_accuracy = {}
    for run, tid in spec["upstream"]["dense"].items():
        metrics = read_metrics(inputs[f"dense_{tid}"])
        test = metrics[metrics.split == "test"]
        dense_accuracy[run] = float(test.loc[test.iteration.idxmax(), "accuracy"])
    frames = []
    for e in spec["upstream"]["entries"]:
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
    plots.error_vs_alpha(paths, out / "error_vs_alpha.png")
    plots.instability_vs_k(result, out / "instability_vs_k.png", settings["threshold"])
    plots.instability_vs_remaining(result, out / "instability_vs_remaining.png", settings["threshold"])
    from lth.report import verdict  # the report's front page shows this line beside the summary's verdict
    lotteries = list(dict.fromkeys(result.lottery))
    verdict.write(out / verdict.FILE, [(f"{lottery}: " if len(lotteries) > 1 else "")
                                       + verdict.instability_line(result[result.lottery == lottery])
                                       for lottery in lotteries])
    for r in result.itertuples():
        _log(f"{r.run} level {r.level} {r.variant} k={r.k} ({r.weights_remaining_pct:.1f}%): instability "
             f"{100 * r.instability_test:.2f}% ({'stable' if r.stable else 'unstable'}), test acc "
             f"{100 * r.test_accuracy:.2f}% vs dense {100 * r.dense_test_accuracy:.2f}% "
             f"({'matching' if r.matching else 'not matching'})")


def run_anatomy(job) -> None:
    """Ticket anatomy of one lottery (lth.report.anatomy): initial values of the survivors, distance
    moved by kept vs pruned weights, per-unit connectivity."""
    from lth.report import anatomy
    from lth.store.artifacts import atomic_path
    spec, inputs, out = job.spec, job.inputs, job.dir
    info = read_model_info(inputs["model"])
    levels = []
    count = len(spec["upstream"]["trains"])
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
    moved = frame[(frame.layer == "all") & frame.quantity.isin(["distance_kept", "distance_pruned"])]
    for level, rows in moved.groupby("level"):
        values = dict(zip(rows.quantity, rows.value))
        _log(f"anatomy level {level}: mean |theta_T - theta_start| kept {values.get('distance_kept', float('nan')):.4f} "
             f"vs pruned {values.get('distance_pruned', float('nan')):.4f}")


def run_classes(job) -> None:
    """Ticket classes (lth.report.classes) from the summary table and each run's learning rate."""
    import pandas as pd

    from lth.report import classes
    from lth.store.artifacts import atomic_path
    from lth.report.summary import read_summary
    spec, inputs, out = job.spec, job.inputs, job.dir
    summary = read_summary(inputs["summary"])
    runs = pd.DataFrame(spec["upstream"]["runs"]).rename(columns={"label": "run"})
    frame = summary.merge(runs, on="run", how="inner")
    result = classes.classify(frame, spec["settings"].get("classes", {}))
    with atomic_path(out / "classes.csv") as tmp:
        result.to_csv(tmp, index=False, float_format="%.6g")
    classes.plot(result, out / "classes.png")
    for r in result.itertuples():
        _log(f"{r.group} level {r.level} ({r.weights_remaining_pct:.1f}%): {r.prize}")
