"""Weight correlation indicator R_p (Liu et al., ICML 2021):

    R_p(theta, theta') = sum_l |T_p(theta^l) ∩ T_p(theta'^l)| / (p * sum_l N_l)

over the prunable layers l, where T_p(theta^l) is the set of the top-p fraction of layer l's
weights by magnitude and N_l the layer's weight count. R_p > p: positively correlated
magnitudes; about p: uncorrelated; below p: negatively correlated.

Conventions (documented because they decide edge cases):
- T_p of a layer holds k_l = round(p * N_l) weights (Python's round, at least 1); the
  denominator is sum_l k_l, which equals p * sum_l N_l whenever p * N_l are integers, so
  R_p(theta, theta) = 1 exactly.
- Ties in magnitude are broken by position: of equal magnitudes, the lower row-major index
  ranks higher (a stable sort of -|w|). Deterministic, and the same for both arguments.
- For a pruned network, pass its mask: each layer then counts only its surviving weights
  (N_l = survivors). Over whole layers the pruned zeros sit at the same places in both
  arguments and, once p exceeds the density, would make R_p approach 1 for any weights.
Numpy only.
"""
from __future__ import annotations

import numpy as np


def top_count(p: float, size: int) -> int:
    return max(1, int(round(p * size)))


def top_p(weights: np.ndarray, p: float) -> np.ndarray:
    """Flat indices of the top-p fraction of `weights` by magnitude (ties: lower index first)."""
    flat = np.abs(np.asarray(weights, dtype=np.float64)).ravel()
    return np.argsort(-flat, kind="stable")[:top_count(p, flat.size)]


def r_p(a: dict, b: dict, p: float, layers: list[str] | None = None,
        mask: dict | None = None) -> tuple[float, dict]:
    """(R_p over all layers, {layer: R_p of that layer}) for two state dicts (numpy); with a
    mask, over each layer's surviving weights only."""
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    layers = layers or [n for n in a if np.ndim(a[n]) >= 2]
    shared, counted, per_layer = 0, 0, {}
    for name in layers:
        if np.shape(a[name]) != np.shape(b[name]):
            raise ValueError(f"{name}: shapes differ ({np.shape(a[name])} vs {np.shape(b[name])})")
        x, y = np.asarray(a[name]).ravel(), np.asarray(b[name]).ravel()
        if mask is not None and name in mask:
            keep = np.asarray(mask[name]).ravel()
            x, y = x[keep], y[keep]
        k = top_count(p, x.size)
        overlap = np.intersect1d(top_p(x, p), top_p(y, p), assume_unique=True).size
        per_layer[name] = overlap / k
        shared += overlap
        counted += k
    return shared / counted, per_layer


def table(a: dict, b: dict, ps, layers: list[str] | None = None, mask: dict | None = None) -> list[dict]:
    """Rows (p, layer, r_p) for every p, with layer "all" for the whole network."""
    rows = []
    for p in ps:
        total, per_layer = r_p(a, b, p, layers, mask)
        rows.append({"p": p, "layer": "all", "r_p": total})
        rows += [{"p": p, "layer": name, "r_p": value} for name, value in per_layer.items()]
    return rows
