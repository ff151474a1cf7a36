import collections
import gzip
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

FASHION = Path("/usr/share/datasets/fashion-mnist")
SNAKEFILE = ROOT / "Snakefile"


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


def write_idx_dataset(directory: Path, train_x, train_y, test_x, test_y) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / "train-images-idx3-ubyte.gz", train_x)
    write_idx(directory / "train-labels-idx1-ubyte.gz", train_y)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", test_x)
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", test_y)
    return directory


@pytest.fixture(scope="session")
def small_idx_dataset(tmp_path_factory) -> Path:
    """A small Fashion-MNIST in IDX format: the first 1,200 training and 300 test images of
    the real dataset when it is installed, else random images (same format, same shapes)."""
    directory = tmp_path_factory.mktemp("fashion-small")
    if (FASHION / "train-images-idx3-ubyte.gz").exists():
        from lth.nn import data
        full = data.load("fashion_mnist")
        return write_idx_dataset(directory, full.train.x[:1200], full.train.y[:1200],
                                 full.test.x[:300], full.test.y[:300])
    rng = np.random.default_rng(0)
    return write_idx_dataset(directory, rng.integers(0, 256, (1200, 28, 28)), rng.integers(0, 10, 1200),
                             rng.integers(0, 256, (300, 28, 28)), rng.integers(0, 10, 300))


# ---- real Snakemake runs (the CLI, in a subprocess) on a tiny config ----

def tiny_config(data_dir, **overrides):
    # device: cpu, since these tests compare bits (a GPU machine would train on its GPU)
    cfg = {"data_dir": str(data_dir), "threads": 1, "levels": 3, "device": "cpu",
           "data": {"dataset": "fashion_mnist", "validation_size": 200},
           "train": {"iterations": "20it", "eval_every": "10it", "batch_size": 60}}
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def snakemake(workdir: Path, *args, check=True):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--cores", "2", *args],
                          cwd=workdir, capture_output=True, text=True, env=env)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def jobs(proc) -> dict:
    """Jobs counted rule by rule from Snakemake's own "Finished jobid: N (Rule: R)" lines."""
    finished = re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", proc.stdout + proc.stderr)
    counts = collections.Counter(finished)
    counts.pop("all", None)
    return dict(counts)


def run(workdir: Path, cfg: dict, *args):
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    return jobs(snakemake(workdir, *args))


# ---- in-process trainings: random tensors (SETTINGS) and the small Fashion-MNIST (RECIPE) ----

SETTINGS = {"optimizer": "adam", "lr": 1.2e-3, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 20,
            "iterations": "3ep", "eval_every": "1ep", "seed": 0}


def random_splits(seed=0):
    """Train, validation and test splits of random images (200, 50, 50): seeded, no files."""
    import torch
    from lth.nn.training import Split
    g = torch.Generator().manual_seed(seed)

    def split(n):
        return Split(torch.randn(n, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))
    return {"train": split(200), "validation": split(50), "test": split(50)}


def half_mask(model):
    rng = np.random.default_rng(0)
    return {n: rng.random(tuple(model.state_dict()[n].shape)) < 0.5 for n in model.prunable()}


RECIPE = {"optimizer": "adam", "lr": 1.2e-3, "momentum": 0.9, "weight_decay": 0, "batch_size": 60,
          "iterations": "100it", "eval_every": "50it", "seed": 0}


@pytest.fixture(scope="module")
def splits(small_idx_dataset):
    """The small Fashion-MNIST, split (read only: trainings do not change it)."""
    from lth.nn import data
    from lth.nn.training import prepare
    return prepare(data.load("fashion_mnist", str(small_idx_dataset)), 200, 0)


def fit(splits, **settings):
    """A LeNet-300-100 trained on `splits` with RECIPE and `settings`: the result and its log lines."""
    from lth.nn import models
    from lth.nn.training import train
    lines = []
    result = train(models.build("lenet_300_100", 0), None, splits, {**RECIPE, **settings}, log=lines.append)
    return result, lines


# ---- one stage directory, every file kind, every damage (no Snakemake) ----

def one_stage(tmp_path) -> Path:
    """A recorded training stage folder holding every file kind (no Snakemake)."""
    from lth.store import masks, ptfile, records
    stage = tmp_path / "results" / "train" / "0123456789ab"
    stage.mkdir(parents=True)
    ptfile.save(stage / "weights.pt", {"w": np.arange(12, dtype=np.float32).reshape(3, 4)})
    masks.write(stage / "mask.parquet", {"w": np.arange(12).reshape(3, 4) % 3 > 0})
    (stage / "stats.json").write_text(json.dumps({"iterations": 300}))
    spec = {"kind": "train", "id": stage.name, "version": 1, "level": 0, "settings": {}, "upstream": {}}
    (stage / "spec.json").write_text(json.dumps(spec))
    records.write(stage, spec, {"weights": "weights.pt", "mask": "mask.parquet", "stats": "stats.json",
                                "spec": "spec.json"})
    return stage


def replace_same_shape(path: Path) -> None:
    """A valid file of the same kind and shapes with other contents."""
    from lth.store import masks, ptfile
    if path.suffix == ".pt":
        state = ptfile.load(path)
        ptfile.save(path, {k: v + 1 for k, v in state.items()})
    elif path.name == "mask.parquet":
        masks.write(path, masks.ones_like({k: v.shape for k, v in masks.read(path).items()}))
    else:  # JSON: the same keys, one number changed
        data = json.loads(path.read_text())
        key = next(k for k in ("iterations", "level", "weights_kept") if isinstance(data.get(k), int))
        path.write_text(json.dumps({**data, key: data[key] + 1}))


DAMAGES = {
    "delete": lambda p: p.unlink(),
    "truncate": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "bitflip": lambda p: p.write_bytes(bytes(b ^ (0x01 if i == len(p.read_bytes()) // 2 else 0)
                                             for i, b in enumerate(p.read_bytes()))),
    "replace": replace_same_shape,
}


def damage(stage: Path, name: str, how: str) -> None:
    """One of DAMAGES done to a stage's file; "replace" of record.json is a hand edit of a
    size (a record rewritten whole would be another valid record)."""
    if name == "record.json" and how == "replace":
        import json
        record = json.loads((stage / name).read_text())
        record["files"]["stats"]["size"] += 1
        (stage / name).write_text(json.dumps(record))
    else:
        DAMAGES[how](stage / name)
