"""What each workflow stage does, given its job (lth.runtime.job.StageJob: spec, verified input
paths, output paths, execution settings).

`python -m lth run MANIFEST` calls these through lth.plan.registry. Each reads its inputs, calls
the logic modules and writes its outputs atomically; lth.runtime.job then writes spec.json and the
record. A runner may return the stage's key figures for its record (the catalog's columns).

Only the stages that build models import torch (lazily, inside the function): prune,
rewind, randmask and perturb work on numpy arrays read with lth.store.ptfile, which saves ~2 s of
process time per job. The analysis stages are in lth.stages.analyses.

A start (the weights a training begins from) is either a `.pt` of full weights (the init's
weights, a control's or a perturbation's start) or, for a rewind, a reference: `start.json`
names the weights file and the mask whose product it is (theta ⊙ m costs no bytes of its
own, so a level stores one float copy, its trained weights). `load_start` reads both, for
every consumer; `python -m lth start` materialises a reference as a `.pt`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from lth.store import masks, ptfile, records
from lth.nn import pruning
from lth.plan import registry
from lth.store.artifacts import ArtifactError, corrupt, read_json, write_json


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


def weight_counts(info: dict, mask: dict | None) -> tuple[int, int]:
    """(kept, total) prunable weights: the mask's counts, or every prunable weight without one."""
    if mask:
        return masks.counts(mask)
    total = sum(int(np.prod(info["tensors"][n])) for n in info["prunable"])
    return total, total


def masked(state: dict, mask: dict) -> dict:
    """The state with pruned weights set to +0.0 (a multiplication would leave -0.0)."""
    return {name: np.where(mask[name], value, 0).astype(value.dtype) if name in mask else value
            for name, value in state.items()}


# A rewind's start as a reference (start.json): which weights file and which mask make it.
START_FORMAT = 1
_REFERENCED = ("weights", "mask")  # what a reference names: the weights, then the mask applied to them


def write_start_reference(path, weights_path, mask_path) -> dict:
    """Write `path` (a rewind stage's start.json): the start is weights_path masked by
    mask_path. Each is recorded by its path relative to the results folder (the stage
    directory's grandparent: <results>/<kind>/<id>/<file>) and the size and sha256 its own
    stage's record holds (lth.store.records), so a reader can check it gets the same bytes."""
    path = Path(path)
    root = path.parent.parent.parent
    ref = {"format": START_FORMAT,
           "start": "weights masked by mask, pruned weights +0.0; `python -m lth start` writes it as a .pt"}
    for what, source in zip(_REFERENCED, (weights_path, mask_path)):
        source = Path(source)
        relative = Path(os.path.relpath(os.path.abspath(source), os.path.abspath(root)))
        if relative.parts[:1] == ("..",) or len(relative.parts) != 3:
            raise ArtifactError(f"{source} is not a stage file of the results folder {root}")
        entry = next((e for e in records.read(source.parent)["files"].values() if e["file"] == source.name), None)
        if entry is None:
            raise records.damaged(source.parent, f"{source.name} is not in its {registry.RECORD}")
        ref[what] = {"file": relative.as_posix(), "size": entry["size"], "sha256": entry["sha256"]}
    write_json(path, ref)
    return ref


def start_references(path) -> dict:
    """{"weights": (path, sha256), "mask": (path, sha256)} named by a start reference
    (start.json), checked for form only; paths resolved against its results folder."""
    path = Path(path)
    ref = read_json(path)
    root = path.parent.parent.parent
    try:
        if ref["format"] != START_FORMAT:
            raise corrupt(path, f"start reference format {ref['format']!r}, this code reads {START_FORMAT}")
        out = {}
        for what in _REFERENCED:
            relative = Path(ref[what]["file"])
            if relative.is_absolute() or ".." in relative.parts or len(relative.parts) != 3:
                raise corrupt(path, f"{what} file {relative} is not <kind>/<id>/<file> of a results folder")
            out[what] = (root / relative, ref[what]["sha256"])
    except (KeyError, TypeError) as exc:
        raise corrupt(path, f"not a start reference (needs format, weights.file/sha256, mask.file/sha256: "
                            f"{type(exc).__name__} {exc})") from None
    return out


def reference_problems(path) -> list[str]:
    """How a start reference disagrees with the records of the files it names: a named
    stage whose record is intact but holds other bytes (rebuilt since) makes the reference
    stale. An unreadable or missing record is the named stage's own damage, not listed here."""
    out = []
    for what, (target, sha) in start_references(path).items():
        try:
            record = records.read(target.parent)
        except ArtifactError:
            continue
        entry = next((e for e in record["files"].values() if e["file"] == target.name), None)
        if entry is None or entry["sha256"] != sha:
            out.append(f"{Path(path).name} names {what} {target} with sha256 {sha[:12]}, its record now "
                       f"holds {'no such file' if entry is None else entry['sha256'][:12]}")
    return out


def load_start(path, info: dict | None = None) -> dict:
    """The start weights of a training: a `.pt` of full weights as it is, or a reference
    (start.json) as its weights file masked by its mask, pruned weights +0.0 exactly as
    `masked` gives them. The named files are checked against their stages' records first
    (a damaged, missing or since-rebuilt one stops the job in one line). info: the model
    description to check shapes against (None: the mask against the weights' own shapes)."""
    path = Path(path)
    if path.suffix != ".json":
        return load_weights(path, info) if info is not None else ptfile.load(path)
    named = start_references(path)
    records.verify(target for target, _ in named.values())  # the bytes their records hold
    stale = reference_problems(path)
    if stale:
        raise corrupt(path, f"{stale[0]} (the reference is stale)")
    weights_path, mask_path = named["weights"][0], named["mask"][0]
    if info is not None:
        return masked(load_weights(weights_path, info), load_mask(mask_path, info))
    state, mask = ptfile.load(weights_path), masks.read(mask_path)
    wrong = [name for name, keep in mask.items() if name not in state or state[name].shape != keep.shape]
    if wrong:
        raise corrupt(mask_path, f"mask tensors {wrong} do not match the weights of {weights_path}")
    return masked(state, mask)


def run_init(job) -> None:
    from lth.nn import models  # torch
    spec, out, settings = job.spec, job.dir, job.settings
    model = models.build(settings["model"]["name"], settings["init"]["seed"])
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    ptfile.save(out / "weights.pt", state)
    write_json(out / "model.json", models.describe(settings["model"]["name"], model))
    _log(f"init {spec['id']}: {settings['model']['name']} seed {settings['init']['seed']}")


def start_iteration(spec: dict, steps_per_epoch: int) -> int:
    """Rewound levels resume at the rewind point k; level 0 and reset levels start at 0."""
    from lth.plan.steps import Step
    point = spec["settings"].get("rewind", {}).get("to", "reset")
    return 0 if point in ("reset", "continue") else Step.parse(point).iterations(steps_per_epoch)


def run_train(job) -> dict | None:
    """A training (or, for a snapshot, the dense recipe's first k iterations)."""
    import torch  # noqa: F401  (training stages are the ones that import torch)

    from lth.nn import checkpoint, data, devices, models, numerics
    from lth.plan.steps import Step
    from lth.nn.training import epoch_steps, prepare, train
    spec, out, ex = job.spec, job.dir, job.execution
    model_info, start, mask_path = job.inputs["model"], job.inputs["start"], job.inputs.get("mask")
    threads, device, data_dir = ex.threads, ex.device, ex.data_dir
    if threads:
        torch.set_num_threads(threads)
    began = time.perf_counter()
    device, lease = devices.claim(device, ex.gpu_slots)  # the lease lives as long as this process
    numerics.configure(job.settings["train"].get("precision", "fp32"), ex.deterministic)  # before any CUDA op
    _log(f"{spec['kind']} {spec['id']}: {devices.describe(device, lease)}")
    # the divergence factor judges the result without changing it: an execution setting
    settings = {**spec["settings"], "train": {**spec["settings"]["train"], "divergence_factor": ex.divergence_factor}}
    if spec["kind"] == "snapshot":  # the dense run's first k iterations: theta_k
        settings = {**settings, "train": {**settings["train"], "iterations": settings["at"],
                                          "eval_every": settings["at"]}}
    info = read_model_info(model_info)
    state = load_start(start, info)  # a rewind's reference: its weights file masked here
    mask = None
    if mask_path is not None:
        mask = load_mask(mask_path, info)
        check_masked(start, state, mask, mask_path)
    dataset = data.load(settings["data"]["dataset"], data_dir)
    check_data(dataset, info, settings, data_dir)
    splits = prepare(dataset, settings["data"]["validation_size"], settings["data"]["split_seed"], device)
    model = models.build(info["name"], dropout=settings["train"].get("dropout", 0.0), width=info.get("width", 1.0))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.to(device)
    kept, total = weight_counts(info, mask)
    total = info.get("reference_weights", total)  # a small dense baseline counts against the full model
    _log(f"train {spec['id']} level {spec['level']}: {kept}/{total} weights "
         f"({100 * kept / total:.1f}%), {settings['train']['iterations']} on {device}")
    per_epoch = epoch_steps(len(splits["train"]), settings["train"]["batch_size"])
    first = start_iteration(spec, per_epoch)
    last = Step.parse(settings["train"]["iterations"]).iterations(per_epoch)
    if spec["kind"] == "train" and first >= last:  # the config check prevents this; the data may differ
        raise data.DataError(f"train {spec['id']}: starts at iteration {first} (rewind point "
                             f"{settings['rewind']['to']}) but trains only to {last}; rewind to an earlier step")
    # the steps in iterations with this dataset, recorded in spec.json (lth.runtime.job)
    job.resolved.update({"steps_per_epoch": per_epoch, "start_iteration": first, "iterations": last})
    every, seconds = checkpoint.parse_interval(ex.checkpoint_every, per_epoch)
    ckpt = checkpoint.Checkpointing(job.checkpoint, every, spec["id"], seconds)
    try:
        result = train(model, mask, splits, settings["train"], start=first, checkpointing=ckpt, stop=job.stop,
                       log=lambda line: _log(f"{spec['kind']} {spec['id']}: {line}"))
    except RuntimeError as exc:  # torch refusing a non-deterministic operation: one line
        raise numerics.explain(exc) or exc

    # a masked training's pruned weights are not stored: packed (ptfile.save)
    ptfile.save(out / "weights.pt", {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()},
                masks=mask)
    figures = None
    if spec["kind"] != "snapshot":
        write_metrics(out / "metrics.parquet", result.metrics)
        stats = {
            "level": spec["level"], "weights_kept": kept, "weights_total": total,
            "iterations": result.iterations, "train_seconds": round(result.train_seconds, 3),
            "eval_seconds": round(result.eval_seconds, 3),
            "job_seconds": round(time.perf_counter() - began, 3),
            "threads": torch.get_num_threads(), "device": device, "start_iteration": first,
            "device_info": numerics.device_info(device), "deterministic": ex.deterministic,
            "divergence_factor": ex.divergence_factor,
        }
        write_json(out / "stats.json", stats)
        figures = key_figures(result.metrics, stats)
    checkpoint.remove(ckpt)  # only now: every output is in place
    return figures


def check_data(dataset, info: dict, settings: dict, data_dir) -> None:
    """The dataset fits the model and the split (lth.nn.data.check_fits), before training."""
    from lth.plan import config
    from lth.nn import data
    classes = info["tensors"][info["output_layer"]][0]
    data.check_fits(dataset, data_dir, classes, config.model_input(info["name"]),
                    settings["data"]["validation_size"], settings["train"]["batch_size"])


def key_figures(rows: list, stats: dict) -> dict:
    """A training's numbers for its record (and so the catalog), as the summary reads them."""
    import pandas as pd

    from lth.report.summary import level_row
    row = level_row({"label": ""}, "", stats["level"], "", pd.DataFrame(rows), stats)
    keys = ("weights_remaining_pct", "early_stop_iteration", "early_stop_test_accuracy", "final_iteration",
            "final_test_accuracy", "final_train_accuracy")
    return {key: row[key] for key in keys}


def write_metrics(path, rows: list) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lth.store.artifacts import atomic_path
    table = pa.table({
        "iteration": pa.array([r["iteration"] for r in rows], type=pa.int64()),
        "split": pa.array([r["split"] for r in rows], type=pa.string()),
        "loss": pa.array([r["loss"] for r in rows], type=pa.float64()),
        "accuracy": pa.array([r["accuracy"] for r in rows], type=pa.float64()),
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def run_prune(job) -> dict:
    spec, out = job.spec, job.dir
    model_info, weights_path, mask_path = job.inputs["model"], job.inputs["weights"], job.inputs.get("mask")
    info = read_model_info(model_info)
    state = load_weights(weights_path, info)
    prunable = info["prunable"]
    current = load_mask(mask_path, info) if mask_path else masks.ones_like({n: state[n].shape for n in prunable})
    p = spec["settings"]["prune"]
    rounds = spec["settings"].get("rounds", 1)  # one-shot: all of level L's rounds at once
    new = pruning.prune({n: state[n] for n in prunable}, current, prunable, info["output_layer"],
                        p["strategy"], p["rate"], p["output_rate"], p.get("conv_rate"), rounds)
    empty = [name for name, keep in new.items() if not keep.any()]
    if empty:  # layerwise schedules are refused at config time (lth.plan.config); global ranking ends here
        from lth.nn.data import DataError
        rate = f"output_rate {p['output_rate']}" if empty[0] == info["output_layer"] else f"rate {p['rate']}"
        raise DataError(f"prune {spec['id']} level {spec['level']}: {p['strategy']} pruning at {rate} "
                        f"leaves {empty[0]} without weights, cutting the network in two; use fewer levels "
                        "(the levels before this one are kept) or a lower rate")
    masks.write(out / "mask.parquet", new)
    kept, total = masks.counts(new)
    _log(f"prune {spec['id']} -> level {spec['level']}: {kept}/{total} weights kept ({100 * kept / total:.2f}%)")
    return {"weights_kept": kept, "weights_total": total}


def run_rewind(job) -> None:
    """Start of the next level: theta_0 masked (reset). Rewinding to a saved iteration k
    (or continuing from the previous level) changes only which weights file is the `init`
    input. The start is stored as a reference (start.json: that weights file and the mask,
    with their records' sha256), not as a second float copy: the training applies the mask
    anyway (load_start). Both files are read here so a start that does not fit the model
    fails at its rewind."""
    spec, out = job.spec, job.dir
    model_info, init_path, mask_path = job.inputs["model"], job.inputs["init"], job.inputs["mask"]
    info = read_model_info(model_info)
    load_weights(init_path, info)
    kept, total = masks.counts(load_mask(mask_path, info))
    write_start_reference(out / "start.json", init_path, mask_path)
    (out / "start.pt").unlink(missing_ok=True)  # the full copy an earlier version of this stage wrote
    _log(f"rewind {spec['id']} level {spec['level']}: start = {init_path} masked by {mask_path} "
         f"({kept}/{total} weights; a reference, start.json)")


def run_reinit(job) -> None:
    """Random-reinitialisation control: the level's mask on a fresh init drawn from the
    stage's recorded seed (Frankle & Carbin 2019)."""
    spec, out, model_info, mask_path = job.spec, job.dir, job.inputs["model"], job.inputs["mask"]
    from lth.nn import models  # torch
    info = read_model_info(model_info)
    seed = spec["settings"]["seed"]
    fresh = {k: v.numpy() for k, v in models.build(info["name"], seed).state_dict().items()}
    mask = load_mask(mask_path, info)
    ptfile.save(out / "start.pt", masked(fresh, mask), masks=mask)
    _log(f"reinit {spec['id']} level {spec['level']}: fresh init seed {seed} masked by {mask_path}")


def run_randmask(job) -> None:
    """Random-pruning control: a random mask with the level's per-layer sparsity."""
    spec, out, model_info, like_path = job.spec, job.dir, job.inputs["model"], job.inputs["like"]
    info = read_model_info(model_info)
    mask = pruning.random_like(load_mask(like_path, info), spec["settings"]["seed"])
    masks.write(out / "mask.parquet", mask)
    kept, total = masks.counts(mask)
    _log(f"randmask {spec['id']} level {spec['level']}: {kept}/{total} weights kept at random")


def run_smalldense(job) -> None:
    """Small-dense baseline (Ma et al. 2021): the model family narrowed until its dense
    weight count matches the level's surviving weights, freshly initialised."""
    spec, out, model_info, like_path = job.spec, job.dir, job.inputs["model"], job.inputs["like"]
    from lth.nn import models  # torch
    info = read_model_info(model_info)
    kept, total = masks.counts(load_mask(like_path, info))
    width = models.small_dense_width(info["name"], kept)
    model = models.build(info["name"], spec["settings"]["seed"], width=width)
    ptfile.save(out / "weights.pt", {k: v.numpy() for k, v in model.state_dict().items()})
    write_json(out / "model.json", models.describe(info["name"], model, width=width, reference_weights=total))
    _log(f"smalldense {spec['id']} level {spec['level']}: width {width:.4f}, "
         f"{models.prunable_count(model)} weights for a mask of {kept}")


def run_perturb(job) -> None:
    """Early-phase perturbation of the rewound subnetwork (lth.nn.perturb)."""
    spec, inputs, out = job.spec, job.inputs, job.dir
    from lth.nn import perturb
    info = read_model_info(inputs["model"])
    mask = load_mask(inputs["mask"], info)
    start = load_start(inputs["start"], info)
    check_masked(inputs["start"], start, mask, inputs["mask"])
    s = spec["settings"]
    state = perturb.perturb(s["perturbation"], start, load_weights(inputs["init"], info), mask, s["seed"],
                            s.get("noise", 1.0))
    ptfile.save(out / "start.pt", state)
    _log(f"perturb {spec['id']} level {spec['level']}: {s['perturbation']} seed {s['seed']}"
         + (f" noise {s['noise']}" if "noise" in s else ""))
