"""Bytes a pruning level writes (its prune, rewind and train stage directories), before and
after issue 14: the rewind stores its start as a reference (start.json) instead of a float
copy (start.pt), and a masked training's weights.pt stores only the surviving weights and the
mask's bits (packed, lth.store.ptfile): figures, never assertions.

Computed from a model's sizes (no training): the .pt files are written here with the
model's tensor shapes and dtypes (their size depends on nothing else: stored uncompressed,
lth.store.ptfile), the mask at level 1's density drawn at random (a real IMP mask compresses
about as well or better: zstd over bit-packed booleans), the reference with the layout
lth.store.starts writes. Spec, record, stats and metrics files are counted as `--small` bytes
(default: what the LeNet-300-100 level 1 of a short default-recipe run wrote here).

Measured, given a results folder: every ticket level's prune + rewind + train directories
(a training whose start is a rewind of a prune's mask; level 0 is the dense training), with
the rewind's start file named; "as before" replaces a start.json by the start.pt the
rewind used to write (the size of the weights file it names: same shapes, stored) and the
packed weights.pt by its dense stored size, and leaves the rest as measured. A packed file's
size depends only on the mask's counts, so the computed "after" is exact for that density.

    python bench/level_bytes.py [--models lenet_300_100,vgg19] [--kept 0.8] [RESULTS ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lth.store import masks, ptfile  # noqa: E402
from workflow import dir_bytes  # noqa: E402  (bench/workflow.py, beside this file)

# LeNet-300-100 level 1 of the default recipe (10,000 iterations, an evaluation every 1,000),
# measured: prune spec + record 876, rewind spec + record 686, train metrics + stats + spec + record 4,029
SMALL_DEFAULT = 5_591


def model_state(name: str) -> tuple[dict, list[str], str]:
    """Zero arrays of the model's state dict (shapes and dtypes as torch has them), its
    prunable tensors and its output layer."""
    import torch

    from lth.nn import models
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = models.build(name)
    dtypes = {torch.float32: np.float32, torch.int64: np.int64}
    state = {k: np.zeros(v.shape, dtype=dtypes[v.dtype]) for k, v in model.state_dict().items()}
    return state, model.prunable(), model.output_layer


def reference_bytes(weights: int, mask: int) -> int:
    """A start.json as lth.store.starts.write_start_reference lays it out (12-hex IDs, sha256s)."""
    from lth.store.artifacts import write_json
    from lth.store.starts import START_FORMAT
    ref = {"format": START_FORMAT,
           "start": "weights masked by mask, pruned weights +0.0; `python -m lth start` writes it as a .pt",
           "weights": {"file": f"init/{'0' * 12}/weights.pt", "size": weights, "sha256": "0" * 64},
           "mask": {"file": f"prune/{'0' * 12}/mask.parquet", "size": mask, "sha256": "0" * 64}}
    with tempfile.TemporaryDirectory() as tmp:
        write_json(Path(tmp) / "start.json", ref)
        return (Path(tmp) / "start.json").stat().st_size


def computed(name: str, kept: float, small: int) -> dict:
    state, prunable, _ = model_state(name)
    rng = np.random.default_rng(0)
    keep = {n: rng.random(state[n].shape) < kept for n in prunable}
    trained = {n: np.where(keep[n], rng.standard_normal(v.shape), 0).astype(v.dtype) if n in keep else v
               for n, v in state.items()}
    with tempfile.TemporaryDirectory() as tmp:
        ptfile.save(Path(tmp) / "w.pt", state)
        weights = (Path(tmp) / "w.pt").stat().st_size
        ptfile.save(Path(tmp) / "t.pt", trained, masks=keep)
        packed = (Path(tmp) / "t.pt").stat().st_size
        masks.write(Path(tmp) / "m.parquet", keep)
        mask = (Path(tmp) / "m.parquet").stat().st_size
    params = sum(v.size for v in state.values())
    prunable_count = sum(state[n].size for n in prunable)
    before = {"trained weights.pt": weights, "start.pt": weights, "mask.parquet": mask, "small files": small}
    after = {**{k: v for k, v in before.items() if k != "start.pt"}, "trained weights.pt": packed,
             "start.json": reference_bytes(weights, mask)}
    return {"model": name, "parameters": params, "prunable": prunable_count, "before": before, "after": after}


def _spec(stage_dir: Path) -> dict:
    return json.loads((stage_dir / "spec.json").read_text())


def measured(results: Path) -> list[dict]:
    """Per ticket level of every lottery in a results folder (the trainings its summaries
    list; without one, every training from a pruned rewind or from an init): the bytes of
    its stage directories."""
    results = Path(results)
    tickets = {tid for d in (results / "summary").glob("*") if (d / "spec.json").is_file()
               for run in _spec(d)["upstream"]["runs"] for tid in run["trains"]}
    rows = []
    for train in sorted((results / "train").glob("*")):
        if not (train / "spec.json").is_file() or (tickets and train.name not in tickets):
            continue
        spec = _spec(train)
        start = spec["upstream"].get("start")
        rewind = results / "rewind" / str(start)
        if (rewind / "spec.json").is_file():
            prune = results / "prune" / _spec(rewind)["upstream"]["mask"]
            if not prune.is_dir():
                continue  # a random-pruning control's rewind (a randmask)
            dirs = [prune, rewind, train]
            total = sum(map(dir_bytes, dirs))
            if (rewind / "start.json").is_file():
                named = (results / json.loads((rewind / "start.json").read_text())["weights"]["file"]).stat().st_size
                stored_weights = named - (train / "weights.pt").stat().st_size  # packed since 2026-12-03
                as_before = total - (rewind / "start.json").stat().st_size + named + stored_weights
                start_file = "start.json"
            else:
                as_before, start_file = total, "start.pt"
        elif (results / "init" / str(start)).is_dir():
            dirs, start_file = [train], "init"
            total = as_before = dir_bytes(train)
        else:
            continue  # a control, a perturbation, a copy from a snapshot
        rows.append({"level": spec["level"], "train": train.name, "start": start_file, "bytes": total,
                     "as_before": as_before, "parts": {d.parent.name: dir_bytes(d) for d in dirs}})
    return sorted(rows, key=lambda r: (r["level"], r["train"]))


def _mb(n: int) -> str:
    return f"{n / 1e6:8.3f} MB ({n / 2 ** 20:6.3f} MiB)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="*", type=Path, help="results folders to measure")
    parser.add_argument("--models", default="lenet_300_100,vgg19", help="comma-separated model names")
    parser.add_argument("--kept", type=float, default=0.8, help="level 1's density for the mask (default 0.8)")
    parser.add_argument("--small", type=int, default=SMALL_DEFAULT,
                        help="bytes of spec/record/stats/metrics files per level")
    args = parser.parse_args()
    print(f"computed from the model's sizes (level 1, {100 * args.kept:.0f} % kept, a random mask):")
    for name in filter(None, args.models.split(",")):
        c = computed(name, args.kept, args.small)
        before, after = sum(c["before"].values()), sum(c["after"].values())
        print(f"  {name}: {c['parameters']:,} parameters ({c['prunable']:,} prunable)")
        for what in ("trained weights.pt", "start.pt", "start.json", "mask.parquet", "small files"):
            b, a = c["before"].get(what), c["after"].get(what)
            print(f"    {what:20s} before {'-' if b is None else f'{b:,}':>12s}   after {'-' if a is None else f'{a:,}':>12s}")
        print(f"    level               before {_mb(before)}   after {_mb(after)}   saved {_mb(before - after)}")
    for results in args.results:
        print(f"measured in {results} (ticket levels: prune + rewind + train directories):")
        for row in measured(results):
            parts = " + ".join(f"{k} {v:,}" for k, v in row["parts"].items())
            print(f"  level {row['level']:2d} ({row['start']:10s}) {_mb(row['bytes'])}   as before "
                  f"{_mb(row['as_before'])}   [{parts}]")


if __name__ == "__main__":
    main()
