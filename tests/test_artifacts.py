import numpy as np
import pandas as pd
import pytest
import torch

from lth.store import masks, ptfile
from lth.store.artifacts import ArtifactError


def some_mask(seed=0):
    rng = np.random.default_rng(seed)
    return {"fc1.weight": rng.random((300, 784)) < 0.5, "fc2.weight": rng.random((100, 300)) < 0.2,
            "fc3.weight": np.ones((10, 100), bool)}


def test_mask_round_trip_is_exact(tmp_path):
    mask = some_mask()
    masks.write(tmp_path / "m.parquet", mask)
    back = masks.read(tmp_path / "m.parquet")
    assert list(back) == list(mask)
    for name in mask:
        assert back[name].dtype == bool and np.array_equal(back[name], mask[name])


def test_mask_is_readable_with_plain_pandas(tmp_path):
    mask = some_mask()
    masks.write(tmp_path / "m.parquet", mask)
    frame = pd.read_parquet(tmp_path / "m.parquet")
    assert list(frame.layer) == list(mask)
    row = frame.iloc[1]
    assert row.kept == mask["fc2.weight"].sum() and row.numel == 30000
    assert np.array_equal(np.array(row["values"]).reshape(row["shape"]), mask["fc2.weight"])


def test_mask_is_bit_packed(tmp_path):
    masks.write(tmp_path / "m.parquet", some_mask())
    assert (tmp_path / "m.parquet").stat().st_size < 266_200 / 8 * 1.1


def test_corrupt_mask_is_reported_with_the_path(tmp_path):
    path = tmp_path / "stage" / "mask.parquet"
    masks.write(path, some_mask())
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ArtifactError, match="corrupt artifact .*mask.parquet.*delete .*stage"):
        masks.read(path)


def test_ptfile_round_trips_with_torch(tmp_path):
    rng = np.random.default_rng(0)
    state = {"w": rng.standard_normal((30, 7)).astype(np.float32), "b": np.zeros(30, np.float32),
             "scalar": np.array(2.5, np.float32), "count": np.arange(4)}
    ptfile.save(tmp_path / "a.pt", state)
    loaded = torch.load(tmp_path / "a.pt", weights_only=True)
    assert list(loaded) == list(state)
    for name, array in state.items():
        assert loaded[name].shape == array.shape and np.array_equal(loaded[name].numpy(), array)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()} | {"t": torch.arange(6.).view(2, 3).t()},
               tmp_path / "b.pt")
    back = ptfile.load(tmp_path / "b.pt")
    assert np.array_equal(back["t"], np.arange(6.0, dtype=np.float32).reshape(2, 3).T)
    for name, array in state.items():
        assert back[name].dtype == array.dtype and np.array_equal(back[name], array)


def test_ptfile_bytes_depend_only_on_contents(tmp_path):
    state = {"w": np.arange(12, dtype=np.float32).reshape(3, 4)}
    ptfile.save(tmp_path / "a.pt", state)
    ptfile.save(tmp_path / "b.pt", state)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_truncated_weights_are_reported(tmp_path):
    path = tmp_path / "weights.pt"
    ptfile.save(path, {"w": np.ones((100, 100), np.float32)})
    path.write_bytes(path.read_bytes()[:-3000])
    with pytest.raises(ArtifactError, match="corrupt artifact .*weights.pt"):
        ptfile.load(path)
    with pytest.raises(ArtifactError, match="missing artifact"):
        ptfile.load(tmp_path / "nope.pt")


def test_tables_that_are_unreadable_or_lack_columns_fail_with_the_file_named(tmp_path):
    import pandas as pd
    from lth.store.artifacts import ArtifactError, read_table
    good = tmp_path / "path.parquet"
    pd.DataFrame({"alpha": [0.0, 1.0], "error": [0.1, 0.2]}).to_parquet(good)
    assert list(read_table(good, "path table", ("alpha", "error")).error) == [0.1, 0.2]
    with pytest.raises(ArtifactError, match=r"path\.parquet: path table lacks columns \['split'\]"):
        read_table(good, "path table", ("alpha", "split"))
    broken = tmp_path / "metrics.parquet"
    broken.write_bytes(b"PAR1 truncated")
    with pytest.raises(ArtifactError, match=r"metrics\.parquet: not a readable metrics table .*delete"):
        read_table(broken, "metrics table")
