"""Pruning masks as self-describing Parquet: one row per prunable tensor.

Columns: layer (tensor name), shape (list of int), numel, kept (surviving count), and
values (list<bool>, row-major). Parquet stores booleans bit-packed, so a LeNet mask is about
34 KB before compression; plain `pandas.read_parquet` reads it, and
`np.array(row.values).reshape(row.shape)` gives the tensor back exactly.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lth.store.artifacts import atomic_path, corrupt

Mask = dict  # tensor name -> numpy bool array


def ones_like(shapes: dict) -> Mask:
    return {name: np.ones(shape, dtype=bool) for name, shape in shapes.items()}


def counts(mask: Mask) -> tuple[int, int]:
    """(kept, total) over all tensors of the mask."""
    return (sum(int(m.sum()) for m in mask.values()), sum(int(m.size) for m in mask.values()))


def write(path, mask: Mask) -> None:
    table = pa.table({
        "layer": pa.array(list(mask), type=pa.string()),
        "shape": pa.array([list(m.shape) for m in mask.values()], type=pa.list_(pa.int64())),
        "numel": pa.array([int(m.size) for m in mask.values()], type=pa.int64()),
        "kept": pa.array([int(m.sum()) for m in mask.values()], type=pa.int64()),
        "values": pa.array([np.ascontiguousarray(m, dtype=bool).ravel() for m in mask.values()],
                           type=pa.list_(pa.bool_())),
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read(path) -> Mask:
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise corrupt(path, "missing") from None
    except (pa.ArrowException, OSError) as exc:
        raise corrupt(path, f"not a readable Parquet file ({exc})") from None
    needed = {"layer", "shape", "numel", "kept", "values"}
    if not needed <= set(table.column_names):
        raise corrupt(path, f"mask table lacks columns {sorted(needed - set(table.column_names))}")
    mask = {}
    # Vectorised decode: the values column is one flat boolean buffer plus offsets.
    values = table.column("values").combine_chunks()
    flat = values.values.to_numpy(zero_copy_only=False)
    offsets = values.offsets.to_numpy()
    for i, (layer, shape, numel, kept) in enumerate(zip(*(table.column(c).to_pylist() for c in
                                                          ("layer", "shape", "numel", "kept")))):
        row = flat[offsets[i]:offsets[i + 1]]
        if row.size != numel or int(np.prod(shape)) != numel or int(row.sum()) != kept:
            raise corrupt(path, f"row {layer!r} is inconsistent (shape {shape}, numel {numel}, "
                                f"kept {kept}, {row.size} values with {int(row.sum())} set)")
        mask[layer] = row.reshape(shape).astype(bool)
    return mask
