"""lth.store.ptfile writes what torch.save writes: stored, 64-byte aligned records that torch.load
reads plainly, with weights_only and with mmap; the same arrays give the same bytes."""
import io
import struct
import zipfile

import numpy as np
import pytest
import torch

from lth.store import ptfile

LOADS = {"plain": {}, "weights_only": {"weights_only": True}, "mmap": {"mmap": True}}


def some_state(seed=0):
    rng = np.random.default_rng(seed)
    return {"fc1.weight": rng.standard_normal((30, 7)).astype(np.float32),
            "fc1.bias": rng.standard_normal(30).astype(np.float32),
            "steps": np.arange(5, dtype=np.int64) * 3,
            "mask": rng.random((4, 6)) < 0.5,
            "scale": np.array(2.5, np.float32),
            "empty": np.zeros((0,), np.float32)}


def records(path):
    """(name, compress type, flag bits, offset of the data in the file, size, crc) per entry."""
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        out = []
        for info in zf.infolist():
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
            start = info.header_offset + 30 + name_len + extra_len
            assert raw[start:start + info.file_size] == zf.read(info)
            out.append((info.filename, info.compress_type, info.flag_bits, start, info.file_size, info.CRC))
    return out


@pytest.mark.parametrize("how", list(LOADS))
def test_torch_loads_every_way(tmp_path, how):
    state = some_state()
    ptfile.save(tmp_path / "w.pt", state)
    loaded = torch.load(tmp_path / "w.pt", **LOADS[how])
    assert list(loaded) == list(state)
    for name, array in state.items():
        expected = torch.from_numpy(array)
        assert loaded[name].dtype == expected.dtype and loaded[name].shape == expected.shape
        assert torch.equal(loaded[name], expected)


def test_mmap_with_computed_offsets_matches_torch_layout(tmp_path, monkeypatch):
    # With calculate_storage_offsets torch finds each data/<key> from miniz's layout rules
    # (padding, data descriptors) instead of reading headers; the debug flag checks every one.
    from torch.utils.serialization import config
    monkeypatch.setenv("TORCH_SERIALIZATION_DEBUG", "1")
    state = some_state()
    ptfile.save(tmp_path / "w.pt", state)
    before = config.load.calculate_storage_offsets
    config.load.calculate_storage_offsets = True
    try:
        for kwargs in ({"mmap": True}, {}):
            loaded = torch.load(tmp_path / "w.pt", **kwargs)
            assert all(torch.equal(loaded[k], torch.from_numpy(v)) for k, v in state.items())
    finally:
        config.load.calculate_storage_offsets = before


def test_records_are_stored_and_aligned_like_torch_save(tmp_path):
    state = some_state()
    ptfile.save(tmp_path / "w.pt", state)
    ours = records(tmp_path / "w.pt")
    data = [r for r in ours if "/data/" in r[0]]
    assert len(data) == len(state)
    for name, method, _flags, start, _size, _crc in ours:
        assert method == zipfile.ZIP_STORED, name
        assert start % 64 == 0, name
    # torch.save into a buffer names its folder "archive" too; everything but the pickle
    # (torch memoizes) and the serialization ID (random there) agrees record by record.
    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, buffer)
    (tmp_path / "t.pt").write_bytes(buffer.getvalue())
    theirs = records(tmp_path / "t.pt")
    assert [r[:3] for r in ours] == [r[:3] for r in theirs]
    same = [i for i, r in enumerate(ours) if not r[0].endswith(("data.pkl", "serialization_id"))]
    assert [ours[i][4:] for i in same] == [theirs[i][4:] for i in same]
    assert [r[3] % 64 for r in theirs] == [0] * len(theirs)


def test_same_arrays_give_identical_bytes(tmp_path):
    state = some_state()
    ptfile.save(tmp_path / "a.pt", state)
    copy = {k: np.array(v, order="F") for k, v in state.items()}  # other memory, same values
    ptfile.save(tmp_path / "b.pt", copy)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    ptfile.save(tmp_path / "c.pt", some_state(seed=1))
    ids = [zipfile.ZipFile(tmp_path / f"{n}.pt").read("archive/.data/serialization_id") for n in "ac"]
    assert ids[0] != ids[1] and all(len(i) == 40 and i.isdigit() for i in ids)


def test_torch_save_output_reads_back(tmp_path):
    state = some_state()
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    tensors["t"] = torch.arange(6.0).view(2, 3).t()  # a non-contiguous view
    torch.save(tensors, tmp_path / "theirs.pt")  # folder named "theirs", not "archive"
    back = ptfile.load(tmp_path / "theirs.pt")
    assert np.array_equal(back["t"], np.arange(6.0, dtype=np.float32).reshape(2, 3).T)
    for name, array in state.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        assert np.array_equal(back[name], array)


def test_old_deflated_files_still_load(tmp_path):
    # What earlier versions wrote: the same records, deflated, without the alignment records.
    state = some_state()
    ptfile.save(tmp_path / "new.pt", state)
    with zipfile.ZipFile(tmp_path / "new.pt") as src, zipfile.ZipFile(tmp_path / "old.pt", "w") as dst:
        for info in src.infolist():
            if info.filename.split("/", 1)[1] in (".format_version", ".storage_alignment",
                                                  ".data/serialization_id"):
                continue
            new = zipfile.ZipInfo(info.filename, date_time=(2020, 1, 1, 0, 0, 0))
            new.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(new, src.read(info), compresslevel=6)
    back = ptfile.load(tmp_path / "old.pt")
    assert list(back) == list(state)
    for name, array in state.items():
        assert back[name].dtype == array.dtype and np.array_equal(back[name], array)
    loaded = torch.load(tmp_path / "old.pt", weights_only=True)
    assert all(torch.equal(loaded[k], torch.from_numpy(v)) for k, v in state.items())


def test_unsupported_dtype_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match="x: dtype complex64"):
        ptfile.save(tmp_path / "w.pt", {"x": np.zeros(3, np.complex64)})
    assert list(tmp_path.iterdir()) == []


def masked_state(density=0.8, seed=0):
    rng = np.random.default_rng(seed)
    keep = rng.random((300, 784)) < density
    state = {"w": np.where(keep, rng.standard_normal((300, 784)), 0).astype(np.float32),
             "b": rng.standard_normal(300).astype(np.float32), "steps": np.arange(3)}
    return state, keep


@pytest.mark.parametrize("how", list(LOADS))
def test_packed_files_are_small_reproducible_and_load_every_way(tmp_path, how):
    """Masked trainings store only their survivors: a LeNet level must fit in 1 MB (issue 14)
    in a file torch loads every way, mmap included (issue 11)."""
    state, keep = masked_state()
    for name in ("a", "b"):
        ptfile.save(tmp_path / f"{name}.pt", state, masks={"w": keep})
    ptfile.save(tmp_path / "stored.pt", state)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    # survivors (80 % of 4 bytes) + 1 bit per weight, against 4 bytes per weight
    assert (tmp_path / "a.pt").stat().st_size < 0.85 * (tmp_path / "stored.pt").stat().st_size
    raw = torch.load(tmp_path / "a.pt", **LOADS[how])
    assert list(raw) == ["w@kept", "w@mask", "w@shape", "b", "steps"]
    assert torch.equal(raw["w@kept"], torch.from_numpy(state["w"][keep]))
    assert raw["w@shape"].tolist() == [300, 784] and raw["w@mask"].dtype == torch.uint8
    back = ptfile.load(tmp_path / "a.pt")
    assert list(back) == list(state)
    assert all(np.array_equal(back[k], state[k]) and back[k].dtype == state[k].dtype for k in state)


def test_packing_refuses_weights_the_mask_prunes(tmp_path):
    state, keep = masked_state()
    state["w"][~keep] = np.float32(-0.0)  # a signed zero is still zero: packs, reads back +0.0
    ptfile.save(tmp_path / "z.pt", state, masks={"w": keep})
    assert not np.signbit(ptfile.load(tmp_path / "z.pt")["w"][~keep]).any()
    state["w"][np.argwhere(~keep)[0][0], np.argwhere(~keep)[0][1]] = 1.0
    with pytest.raises(ValueError, match="w: nonzero weights where the mask prunes them"):
        ptfile.save(tmp_path / "w.pt", state, masks={"w": keep})
    with pytest.raises(ValueError, match="does not fit"):
        ptfile.save(tmp_path / "w.pt", state, masks={"w": keep[:, :10]})
    assert not (tmp_path / "w.pt").exists()


@pytest.mark.parametrize("damage", ["fewer values", "no mask", "short mask", "lone mask", "negative shape"])
def test_damaged_packed_tensors_are_refused(tmp_path, damage):
    from lth.store.artifacts import ArtifactError
    state, keep = masked_state(density=0.3)
    packed = {**ptfile.pack("w", state["w"], keep), "b": state["b"]}
    if damage == "fewer values":
        packed["w@kept"] = packed["w@kept"][:-1]
    elif damage == "no mask":
        del packed["w@mask"]
    elif damage == "short mask":
        packed["w@mask"] = packed["w@mask"][:-1]
    elif damage == "negative shape":
        packed["w@shape"] = np.array([2, -3], np.int64)
    else:
        del packed["w@kept"]
    ptfile.save(tmp_path / "d.pt", packed)
    with pytest.raises(ArtifactError, match="d.pt"):
        ptfile.load(tmp_path / "d.pt")
