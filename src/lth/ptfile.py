"""Read and write `.pt` state dicts of dense CPU tensors without importing torch.

Why: `import torch` plus interpreter exit costs ~2 s per process here, and the prune and
rewind stages only move arrays around. Files written here are ordinary torch.save files
(`torch.load(path, weights_only=True)` returns a dict of tensors), and the same arrays give
the same bytes (no random serialization ID), so artifacts are byte-for-byte reproducible.

Format (torch's zip serialization, version 3): a zip whose entries sit under one folder: `data.pkl` (a protocol-2 pickle of the dict, tensors rebuilt by
torch._utils._rebuild_tensor_v2 from persistent storage IDs), `data/<key>` (raw
little-endian storage bytes), `byteorder`, `version`. torch.save stores entries uncompressed
(for mmap); we deflate them, which torch.load reads too: pruned tensors are mostly zeros, so
a level at 10 % density takes ~0.15 MB instead of 1.06 MB.
"""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from .artifacts import ArtifactError, atomic_path, corrupt

ARCHIVE = "archive"
_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64,
             "IntStorage": np.int32, "BoolStorage": np.bool_, "ByteStorage": np.uint8}
_NAMES = {np.dtype(v): k for k, v in _STORAGES.items()}
# A fixed timestamp makes the zip bytes depend on the contents only.
_DATE = (2020, 1, 1, 0, 0, 0)


def _str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _tuple(values) -> bytes:
    return b"(" + b"".join(_int(v) for v in values) + b"t"


def _pickle(state: dict) -> bytes:
    out = [b"\x80\x02", b"}", b"("]
    for key, (name, array) in enumerate(state.items()):
        strides = [s // array.itemsize for s in array.strides] if array.ndim else []
        out += [_str(name), b"ctorch._utils\n_rebuild_tensor_v2\n", b"(",
                b"(", _str("storage"), f"ctorch\n{_NAMES[array.dtype]}\n".encode(), _str(str(key)),
                _str("cpu"), _int(array.size), b"t", b"Q",
                _int(0), _tuple(array.shape), _tuple(strides), b"\x89",
                b"ccollections\nOrderedDict\n", b")", b"R", b"t", b"R"]
    out += [b"u", b"."]
    return b"".join(out)


def save(path, state: dict) -> None:
    """Write {name: numpy array} as a torch state dict file, atomically."""
    arrays = {k: np.require(v, dtype=np.asarray(v).dtype.newbyteorder("<"), requirements="C")
              for k, v in state.items()}
    for name, array in arrays.items():
        if array.dtype not in _NAMES:
            raise TypeError(f"{name}: dtype {array.dtype} is not supported")
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            def entry(name, data):
                info = zipfile.ZipInfo(f"{ARCHIVE}/{name}", date_time=_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED  # a bare ZipInfo would be stored
                zf.writestr(info, data, compresslevel=6)
            entry("data.pkl", _pickle(arrays))
            entry("byteorder", b"little")
            for key, array in enumerate(arrays.values()):
                entry(f"data/{key}", array.tobytes())
            entry("version", b"3\n")


class _Unpickler(pickle.Unpickler):
    """Rebuilds tensors as numpy arrays; refuses every global except the three torch uses."""

    def __init__(self, data: bytes, storages):
        super().__init__(io.BytesIO(data))
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild
        if module == "torch" and name in _STORAGES:
            return np.dtype(_STORAGES[name])
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid):
        _, dtype, key, _location, numel = pid
        return self.storages(key, dtype, numel)


def _rebuild(storage, offset, shape, stride, *_):
    itemsize = storage.itemsize
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=shape,
                                           strides=[s * itemsize for s in stride]).copy()


def load(path) -> dict:
    """{name: numpy array} from a torch state dict file (torch.save or save() here)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            pkl = next((n for n in names if n.endswith("/data.pkl")), None)
            if pkl is None:
                raise corrupt(path, "no data.pkl record (not a torch zip file)")
            prefix = pkl[: -len("data.pkl")]

            def storage(key, dtype, numel):
                raw = zf.read(f"{prefix}data/{key}")
                array = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
                if array.size != numel:
                    raise corrupt(path, f"storage {key} holds {array.size} values, expected {numel}")
                return array

            state = _Unpickler(zf.read(pkl), storage).load()
    except FileNotFoundError:
        raise ArtifactError(f"missing artifact {path}; rerun the workflow to rebuild it") from None
    except ArtifactError:
        raise
    except Exception as exc:  # zipfile, pickle and struct errors all mean a damaged file
        raise corrupt(path, f"not a readable state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise corrupt(path, "not a state dict of tensors")
    return state


def exists(path) -> bool:
    return Path(path).is_file()
