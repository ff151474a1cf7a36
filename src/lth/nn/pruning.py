"""Magnitude pruning (Frankle & Carbin 2019): each round removes a fraction of the
*surviving* weights with the smallest |theta_T|. Numpy only.

Ties: weights of equal magnitude are ranked by position (row-major within a tensor, tensors
in model order for global ranking); the earlier one is pruned first. The count pruned from
n survivors at rate r is ceil(r * n): with it, LeNet-300-100 keeps exactly the paper's
51.3 %, 21.1 %, 3.6 %, 1.8 % after rounds 3, 7, 15, 18 (round-half-even gives 1.9 % at 18).
"""
from __future__ import annotations

import math

import numpy as np

Mask = dict  # tensor name -> numpy bool array (lth.store.masks; not imported: parse time reads prune_count)


def layer_rates(prunable: list[str], output_layer: str, rate: float, output_rate: float,
                conv_rate: float | None = None, conv_layers=()) -> dict:
    """Per-tensor rates: the output layer's, the conv layers' (if set), else `rate`."""
    return {name: (output_rate if name == output_layer else
                   conv_rate if conv_rate is not None and name in conv_layers else rate)
            for name in prunable}


def _prune_ranked(magnitudes: np.ndarray, surviving: np.ndarray, count: int) -> np.ndarray:
    """Boolean keep-vector: `surviving` minus its `count` smallest magnitudes."""
    keep = surviving.copy()
    alive = np.flatnonzero(surviving)
    order = np.argsort(magnitudes[alive], kind="stable")  # stable: ties go by position
    keep[alive[order[:count]]] = False
    return keep


def prune_count(rate: float, surviving: int) -> int:
    # round(.., 9) first: 0.2 * 235200 must be 47040, not 47041 from float noise
    return math.ceil(round(rate * surviving, 9))


def layerwise(weights: dict, mask: Mask, rates: dict) -> Mask:
    """Each tensor loses ceil(rate_l * survivors_l) of its survivors (prune_count)."""
    out = {}
    for name, rate in rates.items():
        surviving = mask[name].ravel()
        keep = _prune_ranked(np.abs(weights[name]).ravel(), surviving,
                             prune_count(rate, int(surviving.sum())))
        out[name] = keep.reshape(mask[name].shape)
    return out


def global_magnitude(weights: dict, mask: Mask, rates: dict, output_layer: str) -> Mask:
    """All prunable tensors but the output layer ranked together at one rate; the output
    layer pruned on its own at its rate (it is tiny and would otherwise be wiped out)."""
    hidden = [n for n in rates if n != output_layer]
    hidden_rates = {rates[n] for n in hidden}
    if len(hidden_rates) > 1:
        raise ValueError(f"global pruning needs one rate for all hidden tensors, got {hidden_rates}")
    out = {}
    if hidden:
        magnitudes = np.concatenate([np.abs(weights[n]).ravel() for n in hidden])
        surviving = np.concatenate([mask[n].ravel() for n in hidden])
        keep = _prune_ranked(magnitudes, surviving, prune_count(hidden_rates.pop(), int(surviving.sum())))
        offset = 0
        for n in hidden:
            size = mask[n].size
            out[n] = keep[offset:offset + size].reshape(mask[n].shape)
            offset += size
    if output_layer in rates:
        out.update(layerwise(weights, mask, {output_layer: rates[output_layer]}))
    return {n: out[n] for n in rates}


def random_like(mask: Mask, seed: int) -> Mask:
    """A random mask with exactly the same number of survivors per tensor as `mask` (the
    random-pruning control)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, keep in mask.items():
        flat = np.zeros(keep.size, dtype=bool)
        flat[rng.permutation(keep.size)[:int(keep.sum())]] = True
        out[name] = flat.reshape(keep.shape)
    return out


def layerwise_round(weights: dict, mask: Mask, rates: dict, output_layer: str, settings: dict) -> Mask:
    return layerwise(weights, mask, rates)


def global_round(weights: dict, mask: Mask, rates: dict, output_layer: str, settings: dict) -> Mask:
    return global_magnitude(weights, mask, rates, output_layer)


def prune(weights: dict, mask: Mask, prunable: list[str], output_layer: str,
          strategy: str, rate: float, output_rate: float, conv_rate: float | None = None,
          rounds: int = 1, settings: dict | None = None, granularity: str = "weights") -> Mask:
    """The next mask from trained weights (numpy arrays by tensor name) and the current mask,
    by a declared strategy (lth.plan.strategies) with its own settings.

    rounds > 1 is one-shot pruning to the sparsity of `rounds` iterative rounds: the same
    rule applied repeatedly to the same weights removes the smallest survivors each time,
    which is the one-shot magnitude cut with exactly the iterative per-layer counts.

    `weights` are the scores ranked: the trained weights (magnitude) or any nonnegative
    per-weight scores (lth.nn.criteria.gradient_scores). A granularity other than "weights"
    removes whole units per layer (lth.nn.criteria.structured_layerwise; the config allows
    it with per-layer strategies only)."""
    from lth.plan import strategies
    try:
        one_round = strategies.get(strategy).prune_round()
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    conv_layers = {n for n in prunable if weights[n].ndim == 4}
    rates = layer_rates(prunable, output_layer, rate, output_rate, conv_rate, conv_layers)
    if granularity != "weights":
        from lth.nn import criteria

        def one_round(weights, mask, rates, output_layer, settings):
            return criteria.structured_layerwise(weights, mask, rates, output_layer, granularity)
    for _ in range(rounds):
        mask = one_round(weights, mask, rates, output_layer, settings or {})
    return mask
