import pickle

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


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = data.load("fashion_mnist")
    assert ds.train.x.shape == (60000, 28, 28) and ds.test.x.shape == (10000, 28, 28)
    assert np.bincount(ds.test.y).tolist() == [1000] * 10


@pytest.mark.parametrize("name, first", [("fashion_mnist", "train-images-idx3-ubyte.gz"), ("cifar10", "data_batch_1")])
def test_missing_names_the_first_absent_file_without_reading_any(tmp_path, name, first):
    assert data.missing(name, str(tmp_path)) == f"{name}: missing file: {tmp_path / first}; {data.source(name).how_to_get}"
    for alternatives in data.required_files(name, str(tmp_path)):
        alternatives[-1].write_bytes(b"")  # present, however malformed: load() reports those
    assert data.missing(name, str(tmp_path)) is None
