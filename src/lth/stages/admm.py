"""`admm`: the masks of the `admm` pruning strategy (Zhang et al., ECCV 2018; lth.nn.admm).
Planned where a `prune` stage would be (lth.stages.prune.plan, by the strategy's `stage`):
from the trained weights and the current mask, ADMM trains with the lottery's recipe
(optimizer, constant base rate, batches, augmentation) for prune.admm.iterations, pulling
each layer toward its count of the level (the counts layerwise magnitude pruning would keep:
iterative or one-shot, prune.rate / conv_rate / output_rate), then cuts each layer to that
count. An ordinary mask stage (mask.parquet) plus the ADMM weights (the start of fine-tuning
on that mask: controls.fine_tune) and the history of the distance to the sparse set."""
from __future__ import annotations

from lth.plan.registry import StageKind, register
from lth.stages import log
from lth.stages.train import DATA, RECIPE

HISTORY = "admm.parquet"


def run(job) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from lth.nn import admm, devices, models, pruning
    from lth.store import masks, ptfile
    from lth.store.artifacts import atomic_path
    from lth.store.weights import load_mask, load_weights, masked, read_model_info
    spec, out = job.spec, job.dir
    info = read_model_info(job.inputs["model"])
    state = load_weights(job.inputs["weights"], info)
    prunable = info["prunable"]
    current = (load_mask(job.inputs["mask"], info) if "mask" in job.inputs
               else masks.ones_like({n: state[n].shape for n in prunable}))
    p = spec["settings"]["prune"]
    # the level's counts: what layerwise magnitude pruning keeps (one-shot: all rounds at once)
    target = pruning.prune({n: state[n] for n in prunable}, current, prunable, info["output_layer"], "layerwise",
                           p["rate"], p["output_rate"], p.get("conv_rate"), spec["settings"].get("rounds", 1))
    counts = {n: int(target[n].sum()) for n in prunable if target[n].sum() < current[n].sum()}
    device, lease = job.start_torch(job.settings["train"].get("precision", "fp32"))
    log(f"admm {spec['id']}: {devices.describe(device, lease)}")
    model = models.from_info(info, dropout=job.settings["train"].get("dropout", 0.0))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.to(device)
    splits = job.splits(info, device)
    settings = p.get("admm", {})
    history = admm.run(model, current, splits, job.settings["train"], settings, counts,
                       log=lambda line: log(f"admm {spec['id']}: {line}")) if counts else []
    weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    new = admm.hard_cut({n: weights[n] for n in prunable}, current, counts)
    masks.write(out / "mask.parquet", new)
    ptfile.save(out / "weights.pt", masked(weights, new), masks=new)  # ADMM's weights, cut: fine-tuning's start
    with atomic_path(out / HISTORY) as tmp:
        pq.write_table(pa.Table.from_pylist(history, schema=pa.schema([
            ("iteration", pa.int64()), ("tensor", pa.string()), ("rho", pa.float64()), ("distance", pa.float64()),
            ("residual", pa.float64()), ("loss", pa.float64())])), tmp, compression="zstd")
    kept, total = masks.counts(new)
    first = {r["tensor"]: r["distance"] for r in history if r["iteration"] == 0}
    last = {r["tensor"]: r["distance"] for r in history}
    log(f"admm {spec['id']} -> level {spec['level']}: {kept}/{total} weights kept ({100 * kept / total:.2f}%); "
        "distance to the sparse set " + ", ".join(f"{n} {first[n]:.3f} -> {last[n]:.3f}" for n in first))
    return {"weights_kept": kept, "weights_total": total}


register(StageKind("admm", 1, run, {"mask": "mask.parquet", "weights": "weights.pt", "history": HISTORY},
                   consumes=DATA + RECIPE, resources="train"))
