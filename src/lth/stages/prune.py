"""`prune`: the next level's mask from a training's weights and the current mask, by the
configured strategy (lth.plan.strategies; magnitude pruning in lth.nn.pruning), criterion
(|w|, or |w * dL/dw| on seeded batches: lth.nn.criteria) and granularity (single weights,
or whole units / filters). One-shot pruning cuts the dense network's weights to level L's
sparsity in one go. A strategy that trains (ADMM) has its own kind in this one's place."""
from __future__ import annotations

from lth.plan import strategies
from lth.plan.ids import Stage, consumed
from lth.plan.registry import StageKind, register
from lth.stages import log


def plan(cfg: dict, level: int, trained: Stage, previous: Stage | None, model: dict, make) -> Stage:
    """Level `level`'s mask: from `trained` (the dense network for one-shot, else the
    previous level's training) and, iteratively, the previous level's mask."""
    own = strategies.settings(cfg, cfg["prune"]["strategy"])
    settings = consumed("prune", cfg)
    if own:  # a strategy's own settings, hashed only where not at their defaults
        settings["prune"] = {**settings["prune"], cfg["prune"]["strategy"]: own}
    if cfg["prune"]["criterion"] == "gradient":  # scored on training batches: the data they come from
        settings["prune"] = {**settings["prune"], "gradient": dict(cfg["prune"]["gradient"])}
        settings["data"] = consumed("train", cfg)["data"]
    inputs = {**model, "weights": trained.output("weights")}
    if cfg["prune"]["schedule"] == "oneshot":
        settings["rounds"] = level
    elif previous is not None:
        inputs["mask"] = previous.output("mask")
    kind = strategies.get(cfg["prune"]["strategy"]).stage  # a strategy that trains has its own kind
    if kind != "prune":
        settings.update(consumed(kind, cfg))
    return make(kind, level, {"trained": trained.id}, inputs, settings)


def run(job) -> dict:
    from lth.nn import pruning
    from lth.nn.data import DataError
    from lth.store import masks
    from lth.store.weights import load_mask, load_weights, read_model_info
    spec, out = job.spec, job.dir
    model_info, weights_path, mask_path = job.inputs["model"], job.inputs["weights"], job.inputs.get("mask")
    info = read_model_info(model_info)
    state = load_weights(weights_path, info)
    prunable = info["prunable"]
    current = load_mask(mask_path, info) if mask_path else masks.ones_like({n: state[n].shape for n in prunable})
    p = spec["settings"]["prune"]
    rounds = spec["settings"].get("rounds", 1)  # one-shot: all of level L's rounds at once
    scores = {n: state[n] for n in prunable}  # magnitude: the trained weights themselves
    if p.get("criterion", "magnitude") == "gradient":
        scores = gradient_scores(job, info, state, current, p["gradient"])
    new = pruning.prune(scores, current, prunable, info["output_layer"], p["strategy"], p["rate"], p["output_rate"],
                        p.get("conv_rate"), rounds, p.get(p["strategy"]), p.get("granularity", "weights"))
    empty = [name for name, keep in new.items() if not keep.any()]
    if empty:  # refused at config time where the counts are known in advance (lth.plan.checks)
        rate = f"output_rate {p['output_rate']}" if empty[0] == info["output_layer"] else f"rate {p['rate']}"
        raise DataError(f"prune {spec['id']} level {spec['level']}: {p['strategy']} pruning at {rate} "
                        f"leaves {empty[0]} without weights, cutting the network in two; use fewer levels "
                        "(the levels before this one are kept) or a lower rate")
    masks.write(out / "mask.parquet", new)
    kept, total = masks.counts(new)
    log(f"prune {spec['id']} -> level {spec['level']}: {kept}/{total} weights kept ({100 * kept / total:.2f}%)")
    return {"weights_kept": kept, "weights_total": total}


def gradient_scores(job, info: dict, state: dict, mask: dict, settings: dict) -> dict:
    """|w * dL/dw| of the trained weights under the current mask, on the criterion's seeded
    training batches (lth.nn.criteria), on the CPU: a prune job holds no GPU."""
    import torch

    from lth.nn import criteria, models
    model = models.from_info(info)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    split = job.splits(info, "cpu", settings["batch_size"])["train"]
    log(f"prune {job.spec['id']}: gradient scores on {settings['batches']} batches of {settings['batch_size']}")
    return criteria.gradient_scores(model, mask, split, settings["batches"], settings["batch_size"], settings["seed"])


register(StageKind("prune", 1, run, {"mask": "mask.parquet"},
                   consumes=("prune.strategy", "prune.rate", "prune.conv_rate", "prune.schedule", "prune.output_rate",
                             "prune.granularity", "prune.criterion")))
