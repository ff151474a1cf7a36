import pickle
from pathlib import Path

import numpy as np
import pytest

from lth.nn import data
from conftest import FASHION, write_idx, write_idx_dataset


def tiny_idx(tmp_path, n_train=50, n_test=20, gz=True):
    rng = np.random.default_rng(1)
    return write_idx_dataset(tmp_path, rng.integers(0, 256, (n_train, 28, 28)), rng.integers(0, 10, n_train),
                             rng.integers(0, 256, (n_test, 28, 28)), rng.integers(0, 10, n_test))


def test_idx_reader_gz_and_raw(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(data.read_idx(write_idx(tmp_path / "a.gz", array)), array)
    assert np.array_equal(data.read_idx(write_idx(tmp_path / "a", array, gz=False)), array)


def test_idx_dataset_loads_with_data_dir(tmp_path):
    ds = data.load("mnist", str(tiny_idx(tmp_path)))
    assert ds.train.x.shape == (50, 28, 28) and ds.test.y.shape == (20,)
    assert ds.train.y.dtype == np.int64


def test_missing_file_names_it_and_how_to_get_it(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.load("fashion_mnist", str(tmp_path))
    message = str(err.value)
    assert "missing file" in message and "train-images-idx3-ubyte.gz" in message
    assert "apt-get install dataset-fashion-mnist" in message and "\n" not in message


def test_malformed_file_names_it(tmp_path):
    tiny_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(data.DataError, match=r"malformed file \(IDX size mismatch.*t10k-labels"):
        data.load("mnist", str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(data.DataError, match="bad magic number"):
        data.load("mnist", str(tmp_path))


def write_cifar(directory, n=10):
    rng = np.random.default_rng(2)
    directory.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, n).tolist()), b"batch_label": name.encode()}
        (directory / name).write_bytes(pickle.dumps(batch))
    return directory


def test_cifar10_reader(tmp_path):
    directory = write_cifar(tmp_path / "cifar")
    ds = data.load("cifar10", str(directory))
    assert ds.train.x.shape == (50, 3, 32, 32) and ds.test.x.shape == (10, 3, 32, 32)
    raw = pickle.loads((directory / "data_batch_1").read_bytes())
    assert np.array_equal(ds.train.x[0, 1].ravel(), raw[b"data"][0, 1024:2048])  # green plane
    (directory / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(data.DataError, match="malformed file.*data_batch_3"):
        data.load("cifar10", str(directory))


def write_cifar100(directory, n_train=30, n_test=12):
    """CIFAR-100's python version in miniature: cifar-100-python/train and test, each a dict
    with b"data" (N x 3072 uint8), b"fine_labels" (0..99), b"coarse_labels" (0..19), as the
    release pickles them (protocol 2, bytes keys)."""
    rng = np.random.default_rng(3)
    directory.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        batch = {b"filenames": [b"img_%d.png" % i for i in range(n)], b"batch_label": name.encode(),
                 b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
    (directory / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"c%d" % i for i in range(100)]}, protocol=2))
    return directory


def test_cifar100_reader(tmp_path):
    directory = write_cifar100(tmp_path / "cifar-100-python")
    ds = data.load("cifar100", str(directory))
    assert ds.num_classes == 100 and data.source("cifar100").num_classes == 100
    assert data.source("cifar100").shape == (3, 32, 32) and data.source("cifar100").train_size == 50000
    assert ds.train.x.shape == (30, 3, 32, 32) and ds.test.x.shape == (12, 3, 32, 32)
    raw = pickle.loads((directory / "train").read_bytes())
    assert np.array_equal(ds.train.y, raw[b"fine_labels"]) and ds.train.y.dtype == np.int64  # fine, not coarse
    assert np.array_equal(ds.train.x[4, 2].ravel(), raw[b"data"][4, 2048:])  # blue plane
    assert data.train_size("cifar100", str(directory)) == (30, str(directory / "train"))
    assert data.train_size("cifar100", str(tmp_path / "none")) == (50000, "standard size")
    with pytest.raises(data.DataError, match=r"label \d+ of example \d+ in .*cifar-100-python/train is outside "
                                             r"the model's 10 classes"):
        data.check_fits(ds, str(directory), 10, (3, 32, 32), 5, 5)
    data.check_fits(ds, str(directory), 100, (3, 32, 32), 5, 5)
    (directory / "test").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(data.DataError, match=r"malformed file \(KeyError.*fine_labels.*cifar-100-python/test"):
        data.load("cifar100", str(directory))


def test_cifar100_missing_file_is_one_clear_line(tmp_path):
    write_cifar100(tmp_path)
    (tmp_path / "train").unlink()
    with pytest.raises(data.DataError) as err:
        data.load("cifar100", str(tmp_path))
    message = str(err.value)
    assert message.startswith(f"cifar100: missing file: {tmp_path / 'train'}; ") and "\n" not in message
    assert "python -m lth fetch cifar100" in message and "cifar-100-python.tar.gz" in message
    assert data.CIFAR100_MD5 == "eb9058c3a382ffc7106e4002c42a8d85" and data.CIFAR100_MD5 in message


def test_validation_split_is_seeded_disjoint_and_complete():
    arrays = data.Arrays(np.arange(100, dtype=np.uint8).reshape(100, 1, 1), np.arange(100))
    train, val = data.split_validation(arrays, 10, seed=3)
    again, val_again = data.split_validation(arrays, 10, seed=3)
    _, other = data.split_validation(arrays, 10, seed=4)
    assert np.array_equal(val.y, val_again.y) and not np.array_equal(val.y, other.y)
    assert len(val) == 10 and len(train) == 90
    assert sorted(np.concatenate([train.y, val.y]).tolist()) == list(range(100))


def test_fetch_without_torchvision_or_network_says_so(tmp_path):
    try:
        import torchvision  # noqa: F401
        pytest.skip("torchvision imports here; the no-torchvision message cannot be checked")
    except Exception:
        pass
    with pytest.raises(data.DataError, match="cannot download") as err:
        data.fetch("mnist", str(tmp_path))
    assert "\n" not in str(err.value) and "copy train-images-idx3-ubyte.gz" in str(err.value)
    with pytest.raises(data.DataError, match="cannot download.*copy train, test into"):
        data.fetch("cifar100", str(tmp_path))


def test_fetch_cifar100_copies_the_two_pickles(tmp_path, monkeypatch):
    """fetch through torchvision's CIFAR100 (here a stand-in that unpacks a miniature
    release, archive left beside it, as torchvision does): train and test land in the
    target, meta and the archive do not, and load() reads them."""
    import sys
    import types

    class CIFAR100:
        def __init__(self, root, train, download):
            assert download
            write_cifar100(Path(root) / "cifar-100-python")
            (Path(root) / "cifar-100-python.tar.gz").write_bytes(b"archive")

    package, datasets = types.ModuleType("torchvision"), types.ModuleType("torchvision.datasets")
    datasets.CIFAR100, package.datasets = CIFAR100, datasets
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    target = data.fetch("cifar100", str(tmp_path / "c100"))
    assert sorted(p.name for p in target.iterdir()) == ["test", "train"]
    assert len(data.load("cifar100", str(target)).train) == 30


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = data.load("fashion_mnist")
    assert ds.train.x.shape == (60000, 28, 28) and ds.test.x.shape == (10000, 28, 28)
    assert np.bincount(ds.test.y).tolist() == [1000] * 10


@pytest.mark.parametrize("name, first", [("fashion_mnist", "train-images-idx3-ubyte.gz"), ("cifar10", "data_batch_1"),
                                         ("cifar100", "train")])
def test_missing_names_the_first_absent_file_without_reading_any(tmp_path, name, first):
    assert data.missing(name, str(tmp_path)) == f"{name}: missing file: {tmp_path / first}; {data.source(name).how_to_get}"
    for alternatives in data.required_files(name, str(tmp_path)):
        alternatives[-1].write_bytes(b"")  # present, however malformed: load() reports those
    assert data.missing(name, str(tmp_path)) is None
