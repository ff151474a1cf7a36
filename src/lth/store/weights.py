"""A stage's model description (model.json), weights (.pt) and masks (.parquet) read back and
checked against one another: what every stage that reads a network starts with. Numpy only.
"""
from __future__ import annotations

import numpy as np

from lth.store import masks, ptfile
from lth.store.artifacts import corrupt, read_json


def read_model_info(path) -> dict:
    info = read_json(path)
    if not {"name", "tensors", "prunable", "output_layer"} <= set(info):
        raise corrupt(path, "not a model description (needs name, tensors, prunable, output_layer)")
    return info


def load_weights(path, info: dict) -> dict:
    """A state dict as numpy arrays, checked against the model description."""
    state = ptfile.load(path)
    found = {k: list(v.shape) for k, v in state.items()}
    if found != info["tensors"]:
        raise corrupt(path, f"tensors do not match model {info['name']} "
                            f"(expected {info['tensors']}, found {found})")
    return state


def load_mask(path, info: dict) -> dict:
    mask = masks.read(path)
    if list(mask) != info["prunable"] or any(list(m.shape) != info["tensors"][k] for k, m in mask.items()):
        raise corrupt(path, f"mask tensors do not match model {info['name']} (prunable: {info['prunable']})")
    return mask


def check_masked(weights_path, state: dict, mask: dict, mask_path) -> None:
    for name, keep in mask.items():
        if np.count_nonzero(state[name][~keep]):
            raise corrupt(weights_path, f"{name} has nonzero weights where {mask_path} prunes them")


def weight_counts(info: dict, mask: dict | None) -> tuple[int, int]:
    """(kept, total) prunable weights: the mask's counts, or every prunable weight without one."""
    if mask:
        return masks.counts(mask)
    total = sum(int(np.prod(info["tensors"][n])) for n in info["prunable"])
    return total, total


def masked(state: dict, mask: dict) -> dict:
    """The state with pruned weights set to +0.0 (a multiplication would leave -0.0)."""
    return {name: np.where(mask[name], value, 0).astype(value.dtype) if name in mask else value
            for name, value in state.items()}
