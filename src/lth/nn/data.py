"""Datasets read from their standard on-disk formats into memory (numpy, torch-free).

IDX (MNIST, Fashion-MNIST): 2 zero bytes, a dtype byte (0x08 = uint8), a rank byte, then
rank big-endian uint32 sizes, then the values. CIFAR-10: the python pickle batches
data_batch_1..5 and test_batch, each a dict with b"data" (N x 3072 uint8, RGB planes) and
b"labels". CIFAR-100: the python pickles train and test (folder cifar-100-python), the same
but with the 100-class labels under b"fine_labels" (b"coarse_labels", the 20 superclasses,
unused). torchvision is used only, lazily, to download a dataset where a network exists.
"""
from __future__ import annotations

import gzip
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lth.plan import plugins


class DataError(RuntimeError):
    """A dataset file is missing or malformed; the message says which and how to get it."""


@dataclass(frozen=True)
class Arrays:
    x: np.ndarray  # uint8, (N, H, W) or (N, C, H, W)
    y: np.ndarray  # int64, (N,)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> "Arrays":
        return Arrays(self.x[index], self.y[index])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Arrays
    test: Arrays
    num_classes: int


@dataclass(frozen=True)
class Source:
    name: str
    default_dir: str
    how_to_get: str
    reader: "callable"
    shape: tuple = (1, 28, 28)   # (channels, height, width) of one image: models must take it
    train_size: int = 60000      # examples in the standard release's training set (before the files are read)
    num_classes: int = 10

    def directory(self, data_dir: str | None) -> Path:
        return Path(data_dir or self.default_dir)


def _fix(source: Source, path: Path, problem: str) -> DataError:
    return DataError(f"{source.name}: {problem}: {path}; {source.how_to_get}")


def _open(path: Path):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (optionally gzipped) as a numpy array; ValueError says what is wrong."""
    try:
        with _open(path) as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"unreadable ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError("not an IDX file of uint8 (bad magic number)")
    rank = raw[3]
    header = 4 + 4 * rank
    if len(raw) < header:
        raise ValueError("truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=rank, offset=4))
    expected = int(np.prod(shape)) if shape else 0
    if len(raw) - header != expected:
        raise ValueError(f"IDX size mismatch: header says {expected} values, file has {len(raw) - header}")
    # bytearray: a writable buffer, so torch.from_numpy later needs no copy and warns not
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(shape)


IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CIFAR_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR100_FILES = {"train": ("train",), "test": ("test",)}
# CIFAR-100's download, https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, is checked as
# CIFAR-10's is: by torchvision (fetch), whose CIFAR100 checks the archive against this md5
# and the unpacked train and test files against theirs. Named here for a download by hand.
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"


def _idx_candidates(directory: Path, stem: str) -> list[Path]:
    return [directory / f"{stem}.gz", directory / stem]  # gzipped (as Debian ships them) or not


def _idx_path(directory: Path, stem: str) -> Path | None:
    """The IDX file of `stem` that exists (gzipped or not), or None."""
    return next((p for p in _idx_candidates(directory, stem) if p.is_file()), None)


def _idx_file(source: Source, directory: Path, stem: str) -> np.ndarray:
    path = _idx_path(directory, stem)
    if path is None:
        raise _fix(source, _idx_candidates(directory, stem)[0], "missing file")
    try:
        return read_idx(path)
    except ValueError as exc:
        raise _fix(source, path, f"malformed file ({exc})") from None


def _read_idx_dataset(source: Source, directory: Path) -> Dataset:
    parts = {}
    for split, (images, labels) in IDX_STEMS.items():
        x = _idx_file(source, directory, images)
        y = _idx_file(source, directory, labels)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise _fix(source, directory / f"{images}.gz",
                       f"images {x.shape} and labels {y.shape} do not match")
        parts[split] = Arrays(x, y.astype(np.int64))
    return Dataset(source.name, parts["train"], parts["test"], source.num_classes)


def _cifar_batch(source: Source, path: Path, labels_key: bytes = b"labels") -> Arrays:
    if not path.is_file():
        raise _fix(source, path, "missing file")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[labels_key], dtype=np.int64)
    except Exception as exc:  # any unpickling failure means the file is not a CIFAR batch
        raise _fix(source, path, f"malformed file ({type(exc).__name__}: {exc})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise _fix(source, path, f"malformed file (data {data.shape}, labels {labels.shape})")
    return Arrays(data.reshape(-1, 3, 32, 32), labels)


def _read_cifar10(source: Source, directory: Path) -> Dataset:
    train = [_cifar_batch(source, directory / name) for name in CIFAR_BATCHES["train"]]
    test = _cifar_batch(source, directory / CIFAR_BATCHES["test"][0])
    x = np.concatenate([a.x for a in train])
    y = np.concatenate([a.y for a in train])
    return Dataset(source.name, Arrays(x, y), test, source.num_classes)


def _read_cifar100(source: Source, directory: Path) -> Dataset:
    train, test = (_cifar_batch(source, directory / CIFAR100_FILES[split][0], b"fine_labels")
                   for split in ("train", "test"))
    return Dataset(source.name, train, test, source.num_classes)


def _cifar_files(src: Source) -> dict | None:
    """{split: file names} of a CIFAR-format source (python pickles), None for IDX."""
    return {_read_cifar10: CIFAR_BATCHES, _read_cifar100: CIFAR100_FILES}.get(src.reader)


SOURCES = {
    "fashion_mnist": Source(
        "fashion_mnist", "/usr/share/datasets/fashion-mnist",
        "install it with `apt-get install dataset-fashion-mnist` (Debian), or run "
        "`python -m lth fetch fashion_mnist DIR` where a network exists and set data_dir: DIR",
        _read_idx_dataset),
    "mnist": Source(
        "mnist", "data/mnist",
        "run `python -m lth fetch mnist DIR` where a network exists (or copy the four IDX "
        "files train-/t10k-images/labels there) and set data_dir: DIR",
        _read_idx_dataset),
    "cifar10": Source(
        "cifar10", "data/cifar-10-batches-py",
        "run `python -m lth fetch cifar10 DIR` where a network exists (or unpack "
        "cifar-10-python.tar.gz there) and set data_dir: DIR",
        _read_cifar10, (3, 32, 32), 50000),
    "cifar100": Source(
        "cifar100", "data/cifar-100-python",
        "run `python -m lth fetch cifar100 DIR` where a network exists (or unpack cifar-100-python.tar.gz, "
        f"md5 {CIFAR100_MD5}, and copy its cifar-100-python/train and test there) and set data_dir: DIR",
        _read_cifar100, (3, 32, 32), 50000, 100),
}
_DECLARED = plugins.Registry("dataset")
_DECLARED.items = SOURCES  # the same dict: SOURCES[name] is the declared Source


def register(src: Source) -> Source:
    """Declare a dataset (a plugin's: lth.plan.plugins); the schema's data.dataset enum follows."""
    return _DECLARED.register(src)


def names() -> list[str]:
    return _DECLARED.names()


def source(name: str) -> Source:
    plugins.load()
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name]


def load(name: str, data_dir: str | None = None) -> Dataset:
    src = source(name)
    return src.reader(src, src.directory(data_dir))


CIFAR_BATCH_SIZE = 10000  # examples per python batch file of the standard CIFAR-10 release


def _cifar100_train_size(path: Path) -> int | None:
    """Examples in CIFAR-100's train pickle, or None where it does not read. A pickle has no
    header: this unpickles the file (150 MB, a fraction of a second) and counts its labels."""
    try:
        with open(path, "rb") as f:
            return len(pickle.load(f, encoding="bytes")[b"fine_labels"])
    except Exception:  # a malformed file: the training job names it
        return None


def train_size(name: str, data_dir: str | None = None) -> tuple[int, str]:
    """(examples in the training set, where that came from), read from file headers only
    (cheap enough for parse time; CIFAR-100's single train pickle is read whole). Where the
    files are missing: the standard release's size, "standard size" (the first training job
    then reads the real files and checks again)."""
    src = source(name)
    directory = src.directory(data_dir)
    if src.reader is _read_cifar10:
        found = [directory / n for n in CIFAR_BATCHES["train"] if (directory / n).is_file()]
        if found:
            return CIFAR_BATCH_SIZE * len(found), str(directory)
    elif src.reader is _read_cifar100:
        path = directory / CIFAR100_FILES["train"][0]
        count = _cifar100_train_size(path) if path.is_file() else None
        if count is not None:
            return count, str(path)
    else:
        path = _idx_path(directory, IDX_STEMS["train"][1])
        if path is not None:
            try:
                with _open(path) as f:
                    header = f.read(8)
                if len(header) == 8 and header[:2] == b"\0\0" and header[3] == 1:
                    return int.from_bytes(header[4:8], "big"), str(path)
            except (OSError, EOFError):
                pass  # a malformed file: the training job names it
    return src.train_size, "standard size"


def check_fits(dataset: Dataset, data_dir: str | None, num_classes: int, input_shape: tuple,
               validation_size: int, batch_size: int) -> None:
    """Before training: labels within the model's classes, images of the model's shape,
    enough examples for the validation split and one batch; one line naming the file."""
    src = source(dataset.name)
    directory = src.directory(data_dir)
    files = _cifar_files(src)
    cifar = files is not None
    for split, arrays in (("train", dataset.train), ("test", dataset.test)):
        bad = np.flatnonzero((arrays.y < 0) | (arrays.y >= num_classes))
        if bad.size:
            where = (directory / (files[split][bad[0] // CIFAR_BATCH_SIZE] if len(files[split]) > 1
                                  else files[split][0])) if cifar else \
                _idx_path(directory, IDX_STEMS[split][1])
            raise DataError(f"{dataset.name}: label {int(arrays.y[bad[0]])} of example {int(bad[0])} in {where} is "
                            f"outside the model's {num_classes} classes (0..{num_classes - 1}); check the file")
        shape = (1, *arrays.x.shape[1:]) if arrays.x.ndim == 3 else tuple(arrays.x.shape[1:])
        if shape != tuple(input_shape):
            where = directory if cifar else _idx_path(directory, IDX_STEMS[split][0])
            raise DataError(f"{dataset.name}: images in {where} are {'x'.join(map(str, shape))}, the model takes "
                            f"{'x'.join(map(str, input_shape))}; pick the matching dataset or model")
    if len(dataset.test) == 0:
        where = directory / files["test"][0] if cifar else _idx_path(directory, IDX_STEMS["test"][1])
        raise DataError(f"{dataset.name}: the test set in {where} has no examples; every training is evaluated "
                        "on it: restore the file")
    if len(dataset.train) < validation_size + batch_size:
        where = directory if cifar else _idx_path(directory, IDX_STEMS["train"][1])
        raise DataError(f"{dataset.name}: the training set in {where} has {len(dataset.train)} examples, fewer than "
                        f"data.validation_size ({validation_size}) + train.batch_size ({batch_size}); "
                        "lower validation_size or use the full dataset")


def required_files(name: str, data_dir: str | None = None) -> list[list[Path]]:
    """The files load() reads, each as its accepted alternatives (IDX: gzipped or not)."""
    src = source(name)
    directory = src.directory(data_dir)
    files = _cifar_files(src)
    if files is not None:
        return [[directory / name] for names in files.values() for name in names]
    return [_idx_candidates(directory, stem) for stems in IDX_STEMS.values() for stem in stems]


def missing(name: str, data_dir: str | None = None) -> str | None:
    """One line naming the first missing dataset file and how to get it, or None. Cheap
    (no file is read): the Snakefile asks before the first job runs."""
    for alternatives in required_files(name, data_dir):
        if not any(path.is_file() for path in alternatives):
            return str(_fix(source(name), alternatives[0], "missing file"))
    return None


def split_validation(train: Arrays, size: int, seed: int) -> tuple[Arrays, Arrays]:
    """(train, validation): `size` examples held out by a seeded permutation, order kept."""
    if not 0 < size < len(train):
        raise DataError(f"validation_size {size} must be between 1 and {len(train) - 1}")
    order = np.random.default_rng(seed).permutation(len(train))
    held, kept = np.sort(order[:size]), np.sort(order[size:])
    return train.take(kept), train.take(held)


def _first_line(exc: Exception) -> str:
    """An exception's message cut to its first line: errors here stay one line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def fetch(name: str, data_dir: str) -> Path:
    """Download a dataset into data_dir in the format load() reads. Needs a network and an
    importable torchvision; says clearly which is missing."""
    src = source(name)
    target = Path(data_dir)
    try:
        import torchvision.datasets as tvd  # lazy: the CPU torch here cannot import it
    except Exception as exc:
        raise DataError(f"{name}: cannot download: torchvision does not import here ({_first_line(exc)}); "
                        f"run this where it does, or copy {', '.join(p[0].name for p in required_files(name, data_dir))} "
                        f"into {target} by hand, then set data_dir: {target}") from None
    cls = {"fashion_mnist": "FashionMNIST", "mnist": "MNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}[name]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            getattr(tvd, cls)(tmp, train=True, download=True)
            getattr(tvd, cls)(tmp, train=False, download=True)
        except Exception as exc:
            raise DataError(f"{name}: download failed, probably no network here ({_first_line(exc)}); "
                            f"copy the files into {target} by hand instead") from None
        target.mkdir(parents=True, exist_ok=True)
        files = _cifar_files(src)
        # CIFAR: the pickles by their exact names (CIFAR-100's archive also holds "meta")
        found = Path(tmp).rglob("*-ubyte*") if files is None else \
            [p for p in Path(tmp).rglob("*") if p.name in {n for names in files.values() for n in names}]
        for path in found:
            if path.is_file():
                shutil.copy2(path, target / path.name)
    load(name, str(target))  # proves the files are readable
    return target
