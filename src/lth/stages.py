"""What each workflow stage does, given its spec (from lth.plan) and its input paths.

The rules call these through `python -m lth`. Each reads its inputs, calls the logic
modules, and writes every output atomically plus a spec.json.

Only init and train import torch (lazily, inside the function): prune, rewind and summary
work on numpy arrays read with lth.ptfile, which saves ~2 s of process time per job.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import masks, ptfile, pruning
from .artifacts import corrupt, read_json, write_json


def _log(line: str) -> None:
    print(line, flush=True)


def read_model_info(path) -> dict:
    info = read_json(path)
    if not {"name", "tensors", "prunable", "output_layer"} <= set(info):
        raise corrupt(path, "not a model description (needs name, tensors, prunable, output_layer)")
    return info


def load_weights(path, info: dict) -> dict:
    """A state dict as numpy arrays, checked against the model description."""
    state = ptfile.load(path)
    found = {k: list(v.shape) for k, v in state.items()}
    if found != info["tensors"]:
        raise corrupt(path, f"tensors do not match model {info['name']} "
                            f"(expected {info['tensors']}, found {found})")
    return state


def load_mask(path, info: dict) -> dict:
    mask = masks.read(path)
    if list(mask) != info["prunable"] or any(list(m.shape) != info["tensors"][k] for k, m in mask.items()):
        raise corrupt(path, f"mask tensors do not match model {info['name']} (prunable: {info['prunable']})")
    return mask


def check_masked(weights_path, state: dict, mask: dict, mask_path) -> None:
    for name, keep in mask.items():
        if np.count_nonzero(state[name][~keep]):
            raise corrupt(weights_path, f"{name} has nonzero weights where {mask_path} prunes them")


def masked(state: dict, mask: dict) -> dict:
    """The state with pruned weights set to +0.0 (a multiplication would leave -0.0)."""
    return {name: np.where(mask[name], value, 0).astype(value.dtype) if name in mask else value
            for name, value in state.items()}


def run_init(spec: dict, out: Path) -> None:
    from . import models  # torch
    settings = spec["settings"]
    model = models.build(settings["model"]["name"], settings["init"]["seed"])
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    ptfile.save(out / "weights.pt", state)
    write_json(out / "model.json", models.describe(settings["model"]["name"], model))
    write_json(out / "spec.json", spec)
    _log(f"init {spec['id']}: {settings['model']['name']} seed {settings['init']['seed']}")


def start_iteration(spec: dict, steps_per_epoch: int) -> int:
    """Rewound levels resume at the rewind point k; level 0 and reset levels start at 0."""
    from .steps import Step
    point = spec["settings"].get("rewind", {}).get("to", "reset")
    return 0 if point in ("reset", "continue") else Step.parse(point).iterations(steps_per_epoch)


def run_train(spec: dict, model_info: Path, start: Path, mask_path: Path | None, out: Path,
              data_dir: str | None = None, threads: int | None = None, device: str = "auto",
              checkpoint_path: Path | None = None, checkpoint_every: str = "2000it") -> None:
    import torch  # noqa: F401  (training stages are the ones that import torch)

    from . import checkpoint, data, devices, models
    from .steps import Step
    from .training import epoch_steps, prepare, train
    if threads:
        torch.set_num_threads(threads)
    began = time.perf_counter()
    device, lease = devices.resolve(device)  # the lease lives as long as this process
    _log(f"{spec['kind']} {spec['id']}: {devices.describe(device, lease)}")
    settings = spec["settings"]
    if spec["kind"] == "snapshot":  # the dense run's first k iterations: theta_k
        settings = {**settings, "train": {**settings["train"], "iterations": settings["at"],
                                          "eval_every": settings["at"]}}
    info = read_model_info(model_info)
    state = load_weights(start, info)
    mask = None
    if mask_path is not None:
        mask = load_mask(mask_path, info)
        check_masked(start, state, mask, mask_path)
    dataset = data.load(settings["data"]["dataset"], data_dir)
    splits = prepare(dataset, settings["data"]["validation_size"], settings["data"]["split_seed"], device)
    model = models.build(info["name"], dropout=settings["train"].get("dropout", 0.0), width=info.get("width", 1.0))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.to(device)
    kept, total = masks.counts(mask) if mask else \
        (sum(int(np.prod(info["tensors"][n])) for n in info["prunable"]),) * 2
    total = info.get("reference_weights", total)  # a small dense baseline counts against the full model
    _log(f"train {spec['id']} level {spec['level']}: {kept}/{total} weights "
         f"({100 * kept / total:.1f}%), {settings['train']['iterations']} on {device}")
    per_epoch = epoch_steps(len(splits["train"]), settings["train"]["batch_size"])
    first = start_iteration(spec, per_epoch)
    ckpt = checkpoint.Checkpointing(Path(checkpoint_path), Step.parse(checkpoint_every).iterations(per_epoch),
                                    spec["id"]) if checkpoint_path else None
    result = train(model, mask, splits, settings["train"], start=first, checkpointing=ckpt,
                   log=lambda line: _log(f"{spec['kind']} {spec['id']}: {line}"))

    ptfile.save(out / "weights.pt", {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    write_json(out / "spec.json", spec)
    if spec["kind"] != "snapshot":
        write_metrics(out / "metrics.parquet", result.metrics)
        write_json(out / "stats.json", {
            "level": spec["level"], "weights_kept": kept, "weights_total": total,
            "iterations": result.iterations, "train_seconds": round(result.train_seconds, 3),
            "eval_seconds": round(result.eval_seconds, 3),
            "job_seconds": round(time.perf_counter() - began, 3),
            "threads": torch.get_num_threads(), "device": device, "start_iteration": first,
        })
    if ckpt:
        checkpoint.remove(ckpt)  # only now: every output is in place


def write_metrics(path, rows: list) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .artifacts import atomic_path
    table = pa.table({
        "iteration": pa.array([r["iteration"] for r in rows], type=pa.int64()),
        "split": pa.array([r["split"] for r in rows], type=pa.string()),
        "loss": pa.array([r["loss"] for r in rows], type=pa.float64()),
        "accuracy": pa.array([r["accuracy"] for r in rows], type=pa.float64()),
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def run_prune(spec: dict, model_info: Path, weights_path: Path, mask_path: Path | None, out: Path) -> None:
    info = read_model_info(model_info)
    state = load_weights(weights_path, info)
    prunable = info["prunable"]
    current = load_mask(mask_path, info) if mask_path else masks.ones_like({n: state[n].shape for n in prunable})
    p = spec["settings"]["prune"]
    rounds = spec["settings"].get("rounds", 1)  # one-shot: all of level L's rounds at once
    new = pruning.prune({n: state[n] for n in prunable}, current, prunable, info["output_layer"],
                        p["strategy"], p["rate"], p["output_rate"], p.get("conv_rate"), rounds)
    masks.write(out / "mask.parquet", new)
    write_json(out / "spec.json", spec)
    kept, total = masks.counts(new)
    _log(f"prune {spec['id']} -> level {spec['level']}: {kept}/{total} weights kept ({100 * kept / total:.2f}%)")


def run_rewind(spec: dict, model_info: Path, init_path: Path, mask_path: Path, out: Path) -> None:
    """Start weights of the next level: theta_0 masked (reset). Rewinding to a saved
    iteration k changes only which weights file is `init_path`."""
    info = read_model_info(model_info)
    state = masked(load_weights(init_path, info), load_mask(mask_path, info))
    ptfile.save(out / "start.pt", state)
    write_json(out / "spec.json", spec)
    _log(f"rewind {spec['id']} level {spec['level']}: theta_0 masked by {mask_path}")


def run_reinit(spec: dict, model_info: Path, mask_path: Path, out: Path) -> None:
    """Random-reinitialisation control: the level's mask on a fresh init drawn from the
    stage's recorded seed (Frankle & Carbin 2019)."""
    from . import models  # torch
    info = read_model_info(model_info)
    seed = spec["settings"]["seed"]
    fresh = {k: v.numpy() for k, v in models.build(info["name"], seed).state_dict().items()}
    ptfile.save(out / "start.pt", masked(fresh, load_mask(mask_path, info)))
    write_json(out / "spec.json", spec)
    _log(f"reinit {spec['id']} level {spec['level']}: fresh init seed {seed} masked by {mask_path}")


def run_randmask(spec: dict, model_info: Path, like_path: Path, out: Path) -> None:
    """Random-pruning control: a random mask with the level's per-layer sparsity."""
    info = read_model_info(model_info)
    mask = pruning.random_like(load_mask(like_path, info), spec["settings"]["seed"])
    masks.write(out / "mask.parquet", mask)
    write_json(out / "spec.json", spec)
    kept, total = masks.counts(mask)
    _log(f"randmask {spec['id']} level {spec['level']}: {kept}/{total} weights kept at random")


def run_smalldense(spec: dict, model_info: Path, like_path: Path, out: Path) -> None:
    """Small-dense baseline (Ma et al. 2021): the model family narrowed until its dense
    weight count matches the level's surviving weights, freshly initialised."""
    from . import models  # torch
    info = read_model_info(model_info)
    kept, total = masks.counts(load_mask(like_path, info))
    width = models.small_dense_width(info["name"], kept)
    model = models.build(info["name"], spec["settings"]["seed"], width=width)
    ptfile.save(out / "weights.pt", {k: v.numpy() for k, v in model.state_dict().items()})
    write_json(out / "model.json", models.describe(info["name"], model, width=width, reference_weights=total))
    write_json(out / "spec.json", spec)
    _log(f"smalldense {spec['id']} level {spec['level']}: width {width:.4f}, "
         f"{models.prunable_count(model)} weights for a mask of {kept}")


def run_correlation(spec: dict, trainings: dict, out: Path) -> None:
    """R_p (lth.correlation) at each p of analysis.rp_fractions, over the prunable layers and
    per layer, for every ticket training of every lottery:
    - "theta_0 vs theta_T": its start weights (theta_0 masked; theta_k when rewound) against
      its trained weights;
    - "consecutive levels" (level L >= 1): level L-1's trained weights against level L's, the
      two weight sets whose magnitudes chose consecutive masks (a mask itself is binary and
      has no top-p set, so R_p of two masks is undefined).
    A pruned level ranks only its surviving weights (level L's mask in both comparisons).
    trainings: train ID -> {"start", "trained", "model", "stats", "mask" (not at level 0)} paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from . import correlation, plots
    from .artifacts import atomic_path
    ps = spec["settings"]["analysis"]["rp_fractions"]
    cache = {}

    def load(tid):
        if tid not in cache:
            paths = trainings[tid]
            info = read_model_info(paths["model"])
            stats = read_json(paths["stats"])
            cache[tid] = {"info": info, "remaining": 100 * stats["weights_kept"] / stats["weights_total"],
                          "start": load_weights(paths["start"], info),
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
    write_json(out / "spec.json", spec)
    dense = frame[(frame.level == 0) & (frame.layer == "all")]
    _log("R_p(theta_0, theta_T) of the dense run: " +
         ", ".join(f"p={r.p:g}: {r.r_p:.3f}" for r in dense.drop_duplicates("p").itertuples()))


def run_interpolate(spec: dict, inputs: dict, out: Path, data_dir: str | None = None,
                    threads: int | None = None, device: str = "auto") -> None:
    """One instability pair (lth.instability): error and loss along the straight line between
    the pair's trained copies, on the test set and a fixed training subset, recomputing
    BatchNorm statistics at every alpha for models that have BatchNorm."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from . import data, devices, instability, models
    from .artifacts import atomic_path
    from .training import Split, prepare
    if threads:
        torch.set_num_threads(threads)
    device, lease = devices.resolve(device)
    settings = spec["settings"]
    info = read_model_info(inputs["model"])
    a, b = load_weights(inputs["a"], info), load_weights(inputs["b"], info)
    mask = load_mask(inputs["mask"], info) if "mask" in inputs else None
    if mask is not None:
        check_masked(inputs["a"], a, mask, inputs["mask"])
        check_masked(inputs["b"], b, mask, inputs["mask"])
    kept, total = masks.counts(mask) if mask else \
        (sum(int(np.prod(info["tensors"][n])) for n in info["prunable"]),) * 2
    dataset = data.load(settings["data"]["dataset"], data_dir)
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
                                     {"test": splits["test"], "train": subset}, bn_inputs)
    table = pa.Table.from_pylist([{**r, "weights_remaining_pct": 100 * kept / total, "bn_recomputed": has_bn}
                                  for r in rows])
    with atomic_path(out / "path.parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    write_json(out / "spec.json", spec)
    test = [r["error"] for r in rows if r["split"] == "test"]
    _log(f"interpolate {spec['id']}: test error {test[0]:.4f} .. max {max(test):.4f} .. {test[-1]:.4f}, "
         f"instability {instability.barrier(test):.4f}")


def run_instability(spec: dict, inputs: dict, out: Path) -> None:
    """Instability of every analysed network (mean over its pairs), stable and matching
    flags, and the three plots (lth.instability, lth.plots)."""
    import pandas as pd

    from . import instability, plots
    from .artifacts import atomic_path
    from .summary import read_metrics
    dense_accuracy = {}
    for run, tid in spec["upstream"]["dense"].items():
        metrics = read_metrics(inputs[f"dense_{tid}"])
        test = metrics[metrics.split == "test"]
        dense_accuracy[run] = float(test.loc[test.iteration.idxmax(), "accuracy"])
    frames = []
    for e in spec["upstream"]["entries"]:
        path = inputs[f"path_{e['path']}"]
        try:
            rows = pd.read_parquet(path)
        except Exception as exc:
            raise corrupt(path, f"not a readable path table ({type(exc).__name__})") from None
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
    plots.instability_vs_k(result, out / "instability_vs_k.png")
    plots.instability_vs_remaining(result, out / "instability_vs_remaining.png")
    write_json(out / "spec.json", spec)
    for r in result.itertuples():
        _log(f"{r.run} level {r.level} {r.variant} k={r.k} ({r.weights_remaining_pct:.1f}%): instability "
             f"{100 * r.instability_test:.2f}% ({'stable' if r.stable else 'unstable'}), test acc "
             f"{100 * r.test_accuracy:.2f}% vs dense {100 * r.dense_test_accuracy:.2f}% "
             f"({'matching' if r.matching else 'not matching'})")


def run_perturb(spec: dict, inputs: dict, out: Path) -> None:
    """Early-phase perturbation of the rewound subnetwork (lth.perturb)."""
    from . import perturb
    info = read_model_info(inputs["model"])
    mask = load_mask(inputs["mask"], info)
    start = load_weights(inputs["start"], info)
    check_masked(inputs["start"], start, mask, inputs["mask"])
    s = spec["settings"]
    state = perturb.perturb(s["perturbation"], start, load_weights(inputs["init"], info), mask, s["seed"],
                            s.get("noise", 1.0))
    ptfile.save(out / "start.pt", state)
    write_json(out / "spec.json", spec)
    _log(f"perturb {spec['id']} level {spec['level']}: {s['perturbation']} seed {s['seed']}"
         + (f" noise {s['noise']}" if "noise" in s else ""))


def run_anatomy(spec: dict, inputs: dict, out: Path) -> None:
    """Ticket anatomy of one lottery (lth.anatomy): initial values of the survivors, distance
    moved by kept vs pruned weights, per-unit connectivity."""
    from . import anatomy
    from .artifacts import atomic_path
    info = read_model_info(inputs["model"])
    levels = []
    count = len(spec["upstream"]["trains"])
    masks_ = [load_mask(inputs[f"mask_{lvl}"], info) if f"mask_{lvl}" in inputs else None for lvl in range(count)]
    for lvl in range(count):
        stats = read_json(inputs[f"stats_{lvl}"])
        levels.append({"level": lvl, "weights_remaining_pct": 100 * stats["weights_kept"] / stats["weights_total"],
                       "start": load_weights(inputs[f"start_{lvl}"], info),
                       "trained": load_weights(inputs[f"trained_{lvl}"], info),
                       "mask": masks_[lvl], "next_mask": masks_[lvl + 1] if lvl + 1 < count else None})
    frame = anatomy.table(levels, info["prunable"])
    with atomic_path(out / "anatomy.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    anatomy.plot_init_histograms(levels, info["prunable"], out / "init_histograms.png")
    anatomy.plot_distance(frame, out / "distance.png")
    anatomy.plot_connectivity(frame, out / "connectivity.png")
    write_json(out / "spec.json", spec)
    moved = frame[(frame.layer == "all") & frame.quantity.isin(["distance_kept", "distance_pruned"])]
    for level, rows in moved.groupby("level"):
        values = dict(zip(rows.quantity, rows.value))
        _log(f"anatomy level {level}: mean |theta_T - theta_start| kept {values.get('distance_kept', float('nan')):.4f} "
             f"vs pruned {values.get('distance_pruned', float('nan')):.4f}")


def run_classes(spec: dict, inputs: dict, out: Path) -> None:
    """Ticket classes (lth.classes) from the summary table and each run's learning rate."""
    import pandas as pd

    from . import classes
    from .artifacts import atomic_path
    from .summary import read_table
    summary = read_table(inputs["summary"])
    runs = pd.DataFrame(spec["upstream"]["runs"]).rename(columns={"label": "run"})
    frame = summary.merge(runs, on="run", how="inner")
    result = classes.classify(frame, spec["settings"].get("classes", {}))
    with atomic_path(out / "classes.csv") as tmp:
        result.to_csv(tmp, index=False, float_format="%.6g")
    classes.plot(result, out / "classes.png")
    write_json(out / "spec.json", spec)
    for r in result.itertuples():
        _log(f"{r.group} level {r.level} ({r.weights_remaining_pct:.1f}%): {r.prize}")
