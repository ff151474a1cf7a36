"""lth.store.ptfile benchmark: `python bench/ptfile.py [--runs 5]`. Prints figures, asserts nothing.

(a) File size of a LeNet-300-100 state dict (fc1 300x784, fc2 100x300, fc3 10x100 float32
    plus biases), dense and with 90 % of each weight matrix zeroed, as the old deflated
    ptfile wrote it, as the stored, 64-byte aligned layout (torch.save's) writes it, and
    packed (only the survivors and the mask's bits: how masked trainings are saved).
(b) Wall time of one fresh `python -c` process that loads such a file, masks the weights
    at 90 % sparsity and saves the result, as a prune/rewind job does: with lth.store.ptfile +
    numpy, and with `import torch` + torch.load/torch.save. Medians of --runs runs each,
    with a bare interpreter and `import numpy` for reference. This is what keeping the
    prune and rewind jobs torch-free saves per job.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))

import numpy as np  # noqa: E402

from lth.store import ptfile  # noqa: E402

SHAPES = {"fc1": (300, 784), "fc2": (100, 300), "fc3": (10, 100)}
NEW_ONLY = (".format_version", ".storage_alignment", ".data/serialization_id")


def lenet(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    state = {}
    for layer, (out, inp) in SHAPES.items():
        bound = 1 / np.sqrt(inp)
        state[f"{layer}.weight"] = rng.uniform(-bound, bound, (out, inp)).astype(np.float32)
        state[f"{layer}.bias"] = rng.uniform(-bound, bound, out).astype(np.float32)
    return state


def sparse(state: dict, fraction=0.9) -> dict:
    out = dict(state)
    for name, w in state.items():
        if name.endswith(".weight"):
            out[name] = np.where(np.abs(w) > np.quantile(np.abs(w), fraction), w, 0).astype(w.dtype)
    return out


def save_deflated(path, state: dict) -> None:
    """What ptfile.save wrote before: the same records (less the alignment ones), deflated at 6."""
    ptfile.save(path.with_suffix(".tmp.pt"), state)
    with zipfile.ZipFile(path.with_suffix(".tmp.pt")) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if info.filename.split("/", 1)[1] in NEW_ONLY:
                continue
            new = zipfile.ZipInfo(info.filename, date_time=(2020, 1, 1, 0, 0, 0))
            new.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(new, src.read(info), compresslevel=6)
    path.with_suffix(".tmp.pt").unlink()


NUMPY_JOB = ("import numpy as np; from lth import ptfile; s = ptfile.load(IN); "
             "w = {k: np.where(abs(v) > np.quantile(abs(v), 0.9), v, 0).astype(v.dtype) "
             "if k.endswith('.weight') else v for k, v in s.items()}; ptfile.save(OUT, w)")
TORCH_JOB = ("import torch; s = torch.load(IN, weights_only=True); "
             "w = {k: v * (v.abs() > v.abs().flatten().kthvalue(int(0.9 * v.numel())).values) "
             "if k.endswith('.weight') else v for k, v in s.items()}; torch.save(w, OUT)")
JOBS = {"python -c pass": "pass",
        "import numpy": "import numpy",
        "ptfile+numpy, stored input": NUMPY_JOB,
        "ptfile+numpy, deflated input": NUMPY_JOB.replace("IN", "DEFLATED"),
        "torch.load/torch.save": TORCH_JOB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("(a) file size, LeNet-300-100 state dict (266,610 float32)")
        for label, state in (("dense", lenet()), ("90% zero", sparse(lenet()))):
            old, new = tmp / "old.pt", tmp / "new.pt"
            save_deflated(old, state)
            ptfile.save(new, state)
            keep = {n: w != 0 for n, w in state.items() if n.endswith(".weight")}
            ptfile.save(tmp / "packed.pt", state, masks=keep)
            print(f"  {label:9s} deflated (old) {old.stat().st_size / 1e6:7.3f} MB   "
                  f"stored+aligned {new.stat().st_size / 1e6:7.3f} MB   "
                  f"packed+aligned {(tmp / 'packed.pt').stat().st_size / 1e6:7.3f} MB")
        stored, deflated = tmp / "in_stored.pt", tmp / "in_deflated.pt"
        ptfile.save(stored, sparse(lenet(), 0.8))
        save_deflated(deflated, sparse(lenet(), 0.8))
        print(f"(b) fresh process: load, mask at 90 %, save; median of {args.runs} runs")
        env = dict(os.environ, PYTHONPATH=str(SRC))
        for label, code in JOBS.items():
            code = (code.replace("DEFLATED", repr(str(deflated))).replace("IN", repr(str(stored)))
                    .replace("OUT", repr(str(tmp / "out.pt"))))
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-c", code], env=env, check=True)
                times.append(time.perf_counter() - start)
            print(f"  {label:28s} {statistics.median(times):6.3f} s   "
                  f"(min {min(times):.3f}, max {max(times):.3f})")


if __name__ == "__main__":
    main()
