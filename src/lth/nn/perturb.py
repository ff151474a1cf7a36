"""Early-phase perturbations of a rewound subnetwork (Frankle, Schwab & Morcos, ICLR 2020,
"The early phase of neural network training", section 5).

Each kind builds a new start for the subnetwork theta_k ⊙ m from the rewound weights theta_k
(`start`) and the initialization theta_0 (`init`), changing only the surviving weights:
- signs_from_0: magnitudes |theta_k|, signs of theta_0 (a theta_0 of exactly 0 counts as +).
- magnitudes_from_0: magnitudes |theta_0|, signs of theta_k (where theta_k is exactly 0, the
  sign of theta_0).
- permute_layer: the surviving values of each layer permuted among its surviving positions.
- permute_unit: the same within each unit: a row of a linear weight [out, in] (an output
  unit's incoming weights), a filter of a conv weight [out, in, kh, kw] (output channel).
- shuffle_sign: within each layer, positive values permuted among the positive positions
  and negative among the negative ones, so every position keeps its sign.
- noise: theta_k + noise * sigma_l * N(0, 1), sigma_l the standard deviation of layer l's
  theta_0 over the whole layer (the paper's scale for Gaussian noise relative to the init).

Conventions: tensors outside the mask are copied unchanged; pruned positions are exactly
+0.0 and no output weight is -0.0; the dtype is kept. All randomness comes from one
np.random.default_rng(seed) stream, layers visited in the mask's key order, so the same
inputs give identical bytes. Numpy only.
"""
from __future__ import annotations

import numpy as np

KINDS = ("signs_from_0", "magnitudes_from_0", "permute_layer", "permute_unit", "shuffle_sign", "noise")


def _shuffle_within(values: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`values` permuted uniformly at random within each group label: `slots` lists the
    positions grouped by label, `order` the same positions grouped by label but in random
    order inside each group, so each group's values land on that group's positions."""
    keys = rng.random(values.size)
    slots = np.argsort(groups, kind="stable")
    order = np.lexsort((keys, groups))
    out = np.empty_like(values)
    out[slots] = values[order]
    return out


def _survivors(kind: str, w: np.ndarray, w0: np.ndarray, keep: np.ndarray, rng: np.random.Generator,
               noise: float) -> np.ndarray:
    """New values for the surviving positions of one layer (in row-major order of `keep`)."""
    vals, vals0 = w[keep], w0[keep]
    if kind == "signs_from_0":
        # comparisons, not signbit: a theta_0 of -0.0 is "exactly 0" and counts as +
        return np.where(vals0 < 0, -np.abs(vals), np.abs(vals))
    if kind == "magnitudes_from_0":
        negative = np.where(vals != 0, vals < 0, vals0 < 0)
        return np.where(negative, -np.abs(vals0), np.abs(vals0))
    if kind == "permute_layer":
        return _shuffle_within(vals, np.zeros(vals.size, dtype=np.int64), rng)
    if kind == "permute_unit":
        # the first-axis index of each survivor is its output unit (row or filter)
        return _shuffle_within(vals, np.nonzero(keep)[0], rng)
    if kind == "shuffle_sign":
        return _shuffle_within(vals, np.sign(vals).astype(np.int64), rng)
    sigma = float(np.std(np.asarray(w0, dtype=np.float64)))
    return vals.astype(np.float64) + noise * sigma * rng.standard_normal(vals.size)


def perturb(kind: str, start: dict, init: dict, mask: dict, seed: int, noise: float = 1.0) -> dict:
    """A new full state dict: `start` (theta_k ⊙ m) with its surviving prunable weights
    perturbed by `kind` (see the module docstring); `init` is the unmasked theta_0."""
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation {kind!r}; allowed: {', '.join(KINDS)}")
    out = {name: np.array(value, copy=True) for name, value in start.items()}
    rng = np.random.default_rng(seed)
    for name, keep in mask.items():
        w, w0, keep = np.asarray(start[name]), np.asarray(init[name]), np.asarray(keep, dtype=bool)
        if not w.shape == w0.shape == keep.shape:
            raise ValueError(f"{name}: shapes differ (start {w.shape}, init {w0.shape}, mask {keep.shape})")
        full = np.zeros(w.shape, dtype=np.float64)
        full[keep] = _survivors(kind, w, w0, keep, rng, noise)
        # np.where, not multiplication, so pruned positions are +0.0; adding +0.0 turns any
        # -0.0 (a zero magnitude given a negative sign) into +0.0 and leaves the rest exact
        out[name] = np.where(keep, full, 0.0).astype(w.dtype) + w.dtype.type(0)
    return out
