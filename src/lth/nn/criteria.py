"""Pruning criteria beside per-weight magnitude (LTH'19's "Weights? Neurons? Filters?
Channels? ... Magnitudes? Gradients?"): structured pruning of whole units ranked by a
per-unit score, and a gradient-based per-weight score |w * dL/dw|.

Numpy only at import: the structured part is torch-free (parse time and pruning stages may
use it); `gradient_scores` imports torch when called.
"""
from __future__ import annotations

import numpy as np

from lth.nn import pruning

GRANULARITIES = ("weights", "units", "filters")
"""What a pruning round removes, per prunable tensor:

"weights": each weight on its own (lth.nn.pruning.layerwise on the scores).
"units": every hidden tensor loses whole output units: rows of a fully connected weight
    [out, in] (output neurons), filters of a conv weight [out, in, kh, kw] (output channels).
"filters": conv tensors lose whole filters; fully connected tensors are pruned weight by
    weight.

The output layer is always pruned weight by weight (its units are the classes). A unit's
score is the sum of its surviving weights' scores, in absolute value (magnitude: the L1 norm
of the unit, as Li et al. 2017 "Pruning filters for efficient ConvNets"; gradient: the sum
of |w * g|). Each round a structured tensor loses prune_count(rate, alive units) of its
alive units (those with any surviving weight), the smallest sums first, ties by unit index
(the lower index first); every weight of a removed unit is pruned.
"""

# The score batches are seeded by lth.nn.training.derived_seed(seed, 0, SCORE_STREAM): (seed, 0)
# alone is the data order of a training's epoch 0, and the other streams are its augmentation,
# dropout and ADMM's; so the batches are drawn apart from any training even with its own seed.


def _check(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown pruning granularity {granularity!r}; one of {', '.join(GRANULARITIES)}")


def unit_counts(shape: tuple, granularity: str, is_output: bool) -> int | None:
    """How many units a tensor of `shape` has under `granularity` (its shape[0]: FC rows or
    conv filters), or None where it is pruned weight by weight: always for the output layer
    and for "weights"; for fully connected (2-d) tensors under "filters"; for tensors that
    are neither 2-d nor 4-d."""
    _check(granularity)
    ndim = len(shape)
    if is_output or granularity == "weights":
        return None
    if ndim == 4 or (ndim == 2 and granularity == "units"):
        return int(shape[0])
    return None


def unit_scores(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per unit (index 0), the sum of its surviving weights' |scores|, in float64."""
    surviving = np.where(mask, np.abs(np.asarray(scores, dtype=np.float64)), 0.0)
    return surviving.reshape(surviving.shape[0], -1).sum(axis=1)


def _prune_units(scores: np.ndarray, mask: np.ndarray, rate: float) -> np.ndarray:
    units = mask.reshape(mask.shape[0], -1)
    alive = np.flatnonzero(units.any(axis=1))
    sums = unit_scores(scores, mask)[alive]
    order = np.argsort(sums, kind="stable")  # stable: ties go by unit index
    removed = alive[order[:pruning.prune_count(rate, len(alive))]]
    keep = mask.copy()
    keep[removed] = False
    return keep


def structured_layerwise(scores: dict, mask: dict, rates: dict, output_layer: str, granularity: str) -> dict:
    """The next mask: each tensor in `rates` pruned at its rate, in units or weight by weight
    as `granularity` says for its shape (GRANULARITIES, unit_counts). `scores`: per-weight
    scores by tensor name (weights themselves for magnitude: their |.| is taken; or
    gradient_scores). Weight-wise tensors get lth.nn.pruning.layerwise's mask exactly."""
    _check(granularity)
    weightwise = {}
    out = {}
    for name, rate in rates.items():
        keep = np.asarray(mask[name], dtype=bool)
        score = np.asarray(scores[name])
        if score.shape != keep.shape:
            raise ValueError(f"{name}: scores of shape {score.shape}, mask of shape {keep.shape}")
        if unit_counts(keep.shape, granularity, name == output_layer) is None:
            weightwise[name] = rate
        else:
            out[name] = _prune_units(score, keep, rate)
    if weightwise:
        out.update(pruning.layerwise(scores, mask, weightwise))
    return {name: out[name] for name in rates}


def score_batches(n: int, batches: int, batch_size: int, seed: int):
    """Indices (batches, batch_size) into a split of n examples, drawn without replacement
    from a seeded permutation (CPU generator: the same on every device). Torch."""
    import torch

    from lth.nn.training import SCORE_STREAM, derived_seed
    if batches < 1 or batch_size < 1:
        raise ValueError(f"gradient scores need batches >= 1 and batch_size >= 1, got {batches} and {batch_size}")
    if batches * batch_size > n:
        raise ValueError(f"gradient scores need {batches} x {batch_size} = {batches * batch_size} distinct "
                         f"examples; the split has {n}")
    # derived_seed(seed, 0, SCORE_STREAM): apart from the training's data order (seed, epoch)
    # and its augmentation/dropout streams, so the same seed draws other examples than epoch 0
    generator = torch.Generator().manual_seed(derived_seed(seed, 0, SCORE_STREAM))
    return torch.randperm(n, generator=generator)[:batches * batch_size].view(batches, batch_size)


def gradient_scores(model, mask: dict | None, split, batches: int, batch_size: int, seed: int,
                    precision: str = "fp32") -> dict:
    """|w * dL/dw| for each prunable tensor of `model` (model.prunable()), numpy float64 by
    name: L is the mean cross-entropy over `batches` batches of `batch_size` examples of
    `split` (lth.nn.training.Split) drawn without replacement (score_batches), each batch's
    mean loss divided by `batches`, the gradients summed in float64. The network scored is
    the masked one: the forward runs on w * mask (the model's own tensors untouched, so
    dense weights with a mask give the masked network's scores); masked weights score
    exactly 0.

    The model is in eval mode for the forward: BatchNorm uses (and does not update) its
    running statistics, dropout is off; its training flag is restored afterwards. Its
    weights, buffers and parameters' .grad are left as they were (the gradients come from
    torch.autograd.grad, never stored in .grad). `precision`: the trainings' arithmetic
    (lth.nn.numerics.autocast for the forward, the loss on float32 logits)."""
    import torch
    from torch.func import functional_call
    from torch.nn import functional as F

    from lth.nn import numerics

    names = model.prunable()
    params = dict(model.named_parameters())
    device = split.x.device
    keep = {}
    for name in names:
        if mask is not None and name in mask:
            m = np.asarray(mask[name], dtype=bool)
            if m.shape != tuple(params[name].shape):
                raise ValueError(f"{name}: mask of shape {m.shape}, weight of shape {tuple(params[name].shape)}")
            keep[name] = torch.as_tensor(m, device=params[name].device)
    index = score_batches(len(split), batches, batch_size, seed).to(device)
    total = {name: torch.zeros(params[name].shape, dtype=torch.float64, device=params[name].device)
             for name in names}
    was_training = model.training
    model.eval()
    try:
        for rows in index:
            # masked copies, a leaf each: d loss / d (w * m), taken at the masked network
            weights = {name: (params[name].detach() * keep[name] if name in keep else params[name].detach())
                       .requires_grad_(True) for name in names}
            with numerics.autocast(precision, device):
                logits = functional_call(model, weights, (split.x.index_select(0, rows),))
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
            loss = F.cross_entropy(logits, split.y.index_select(0, rows)) / batches
            grads = torch.autograd.grad(loss, [weights[name] for name in names])
            for name, grad in zip(names, grads):
                total[name] += grad.double()
    finally:
        model.train(was_training)
    out = {}
    for name in names:
        w = params[name].detach().double()
        score = (w * total[name]).abs()
        if name in keep:
            score = torch.where(keep[name], score, torch.zeros((), dtype=score.dtype, device=score.device))
        out[name] = score.cpu().numpy()
    return out
