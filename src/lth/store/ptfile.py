"""Read and write `.pt` state dicts of dense CPU tensors without importing torch.

Why: the prune and rewind stages only move arrays around, and `import torch` costs them
about 1 s per process here (bench/ptfile.py: a load-mask-save job takes ~0.12 s with this
module and numpy, ~1.15 s with torch.load/torch.save). Files written here are ordinary
torch.save files: `torch.load(path)`, `torch.load(path, weights_only=True)` and
`torch.load(path, mmap=True)` all return the dict of tensors. The same arrays give the same
bytes (zeroed timestamps, a serialization ID derived from the contents' sha256 instead of a
random one), so artifacts are byte-for-byte reproducible.

Format: torch's zip serialization (record version 3, `.format_version` 1), laid out as
torch.save (miniz) writes it. Records sit under one folder, in this order: `data.pkl` (a
protocol-2 pickle of the dict, tensors rebuilt by torch._utils._rebuild_tensor_v2 from
persistent storage IDs), `.format_version`, `.storage_alignment` ("64"), `byteorder`,
`data/<key>` (raw little-endian storage bytes), `version`, `.data/serialization_id`. Every
record is stored uncompressed, and its local header carries an extra field ("FB", length,
"Z" padding) that puts the record's first byte at a multiple of 64; non-empty records are
followed by a data descriptor; a zip64 end record closes the file. Stored and aligned is
what `mmap=True` needs: torch maps the file and uses each `data/<key>` record in place
(deflated records made it fail with "Trying to resize storage that is not resizable").

Masked weights are stored packed, still as plain tensors: a pruned tensor `name` becomes
`name@kept` (its surviving values, C order), `name@mask` (the mask as bits,
numpy.packbits little-endian) and `name@shape` (int64). Why: a dense float copy of a pruned
LeNet-300-100 takes 1.07 MB at any density; packed it takes 0.89 MB at 80 % and 0.14 MB at
10 %, and every file stays mmap-able. load() (and `python -m lth start FILE`) returns the dense
tensors again, pruned weights +0.0; it also reads deflated files written by earlier versions
and any torch.save file of dense tensors.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from lth.store.artifacts import ArtifactError, atomic_path, corrupt

ARCHIVE = "archive"
_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64,
             "IntStorage": np.int32, "BoolStorage": np.bool_, "ByteStorage": np.uint8}
_NAMES = {np.dtype(v): k for k, v in _STORAGES.items()}
ALIGNMENT = 64  # torch.save's default storage alignment (.storage_alignment)
_U32 = 0xFFFFFFFF
PACKED = ("@kept", "@mask", "@shape")  # the three tensors that hold one packed masked tensor


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


def save(path, state: dict, masks: dict | None = None) -> None:
    """Write {name: numpy array} as a torch state dict file, atomically. Tensors named in
    `masks` ({name: bool array of the same shape}) are stored packed (see the module's
    docstring); their pruned entries must be zero."""
    arrays = {}
    for name, value in state.items():
        if masks is not None and name in masks:
            arrays.update(pack(name, np.asarray(value), np.asarray(masks[name])))
        else:
            arrays[name] = value
    arrays = {k: np.require(v, dtype=np.asarray(v).dtype.newbyteorder("<"), requirements="C")
              for k, v in arrays.items()}
    for name, array in arrays.items():
        if array.dtype not in _NAMES:
            raise TypeError(f"{name}: dtype {array.dtype} is not supported")
    records = [("data.pkl", _pickle(arrays)), (".format_version", b"1"),
               (".storage_alignment", str(ALIGNMENT).encode()), ("byteorder", b"little")]
    records += [(f"data/{key}", array.reshape(-1).view(np.uint8))
                for key, array in enumerate(arrays.values())]
    records.append(("version", b"3\n"))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        _write_zip(f, records)


def pack(name: str, value: np.ndarray, keep: np.ndarray) -> dict:
    """The three tensors that store `value` under the mask `keep` (survivors, bits, shape)."""
    if keep.shape != value.shape or keep.dtype != np.bool_:
        raise ValueError(f"{name}: mask {keep.dtype} {keep.shape} does not fit tensor {value.shape}")
    if np.count_nonzero(value[~keep]):
        raise ValueError(f"{name}: nonzero weights where the mask prunes them; mask the state first")
    flat = keep.reshape(-1)
    kept, bits, shape = PACKED
    return {name + kept: value.reshape(-1)[flat], name + bits: np.packbits(flat, bitorder="little"),
            name + shape: np.array(value.shape, np.int64)}


def unpack(state: dict, path="state") -> dict:
    """The dense state dict of a file that may hold packed tensors, in the file's order."""
    out = {}
    for key, value in state.items():
        if key.endswith(PACKED[0]):
            name = key[: -len(PACKED[0])]
            bits, shape = state.get(name + PACKED[1]), state.get(name + PACKED[2])
            if bits is None or shape is None or shape.ndim != 1:
                raise corrupt(path, f"packed tensor {name} lacks its mask or shape")
            if shape.dtype.kind not in "iu" or (shape < 0).any():
                raise corrupt(path, f"packed tensor {name} has the shape {shape.tolist()}")
            size = int(np.prod(shape))
            if bits.dtype != np.uint8 or bits.size != -(-size // 8):
                raise corrupt(path, f"packed tensor {name}: {bits.size} mask bytes for {size} values")
            keep = np.unpackbits(bits, count=size, bitorder="little").astype(bool)
            if np.count_nonzero(keep) != value.size or value.ndim != 1:
                raise corrupt(path, f"packed tensor {name}: {value.size} kept values for a mask of "
                                    f"{np.count_nonzero(keep)}")
            dense = np.zeros(size, value.dtype)
            dense[keep] = value
            out[name] = dense.reshape(tuple(int(n) for n in shape))
        elif key.endswith(PACKED[1:]):
            if key.rsplit("@", 1)[0] + PACKED[0] not in state:
                raise corrupt(path, f"{key} without its packed values")
        else:
            out[key] = value
    return out


def _serialization_id(digest: bytes) -> bytes:
    """40 digits like torch's (two zero-padded uint64s), but taken from the contents' hash."""
    a, b = struct.unpack("<QQ", digest[:16])
    return f"{a:020d}{b:020d}".encode()


def _write_zip(f, records) -> None:
    """The zip layout of torch.save (PyTorchStreamWriter on miniz): stored records, each
    record's data aligned to ALIGNMENT by padding the local header's extra field, a data
    descriptor after each non-empty record, no timestamps, zip64 end records."""
    central, offset, digest = [], 0, hashlib.sha256()
    for name, data in records + [(".data/serialization_id", None)]:
        if data is None:  # the last record: an ID that depends on everything before it
            data = _serialization_id(digest.digest())
        size = memoryview(data).nbytes
        digest.update(struct.pack("<QQ", len(name), size) + name.encode())
        digest.update(data)
        full = f"{ARCHIVE}/{name}".encode()
        if offset + size + 200 >= _U32:
            raise ValueError(f"{name}: state dicts of 4 GiB or more are not supported")
        start = offset + 30 + len(full) + 4
        pad = -start % ALIGNMENT
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        crc = zlib.crc32(data)
        flags = 0x0808 if size else 0x0800  # UTF-8 names; sizes follow in a data descriptor
        f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 0, flags, 0, 0, 0, 0, 0, 0,
                            len(full), len(extra)) + full + extra)
        f.write(data)
        if size:
            f.write(struct.pack("<4s3L", b"PK\x07\x08", crc, size, size))
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 0, 0, flags, 0, 0, 0,
                                   crc, size, size, len(full), 0, 0, 0, 0, 0, offset) + full)
        offset = start + pad + size + (16 if size else 0)
    directory = b"".join(central)
    n = len(central)
    f.write(directory)
    f.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 0x031E, 45, 0, 0, n, n,
                        len(directory), offset))
    f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + len(directory), 1))
    f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(directory), offset, 0))


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
    """{name: numpy array} from a torch state dict file (torch.save or save() here), packed
    tensors unpacked."""
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
    return unpack(state, path)


def exists(path) -> bool:
    return Path(path).is_file()
