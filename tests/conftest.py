import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

FASHION = Path("/usr/share/datasets/fashion-mnist")


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
