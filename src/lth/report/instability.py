"""Linear mode connectivity and instability (Frankle, Dziugaite, Roy & Carbin, ICML 2020).

Two copies W1, W2 are trained from the same weights (theta_k ⊙ m) with different SGD noise
(data order, augmentation). Along the line between them

    E_alpha = error(alpha * W1 + (1 - alpha) * W2),  alpha in [0, 1] (evenly spaced, endpoints included)

and the instability is the error barrier  sup_alpha E_alpha - mean(E(W1), E(W2)).  A network
is *stable* when its instability is below a threshold (2 % in the paper), and a subnetwork is
*matching* when its accuracy is less than 0.2 % below the full network's.

Conventions: the mask holds along the path (pruned weights are zero in both copies, so in
every interpolation too; checked, not assumed). Integer buffers (BatchNorm's batch counter)
are not interpolated. With BatchNorm the running statistics of an interpolated network
belong to neither endpoint, so at every alpha they are recomputed (cumulative average) on a
fixed set of training batches before evaluating, as the paper does.

The pure functions (alphas, interpolate, barrier, summarise) are numpy/pandas; only
`evaluate_path` needs torch (imported by its caller's process, not at module import).
"""
from __future__ import annotations

import numpy as np
import pandas as pd


# Columns of one pair's path table (written by the interpolate stage, read by the summary).
PATH_COLUMNS = ("alpha", "split", "loss", "error", "weights_remaining_pct", "bn_recomputed")


def alphas(count: int) -> np.ndarray:
    """`count` evenly spaced interpolation weights from 0 (W2) to 1 (W1), endpoints included."""
    if count < 2:
        raise ValueError(f"need at least 2 interpolation points (the endpoints), got {count}")
    return np.linspace(0.0, 1.0, count)


def interpolate(w1: dict, w2: dict, alpha: float) -> dict:
    """alpha * W1 + (1 - alpha) * W2 for floating tensors; integer tensors are W1's."""
    out = {}
    for name, a in w1.items():
        b = w2[name]
        if np.issubdtype(a.dtype, np.floating):
            out[name] = (alpha * a.astype(np.float64) + (1 - alpha) * b.astype(np.float64)).astype(a.dtype)
        else:
            out[name] = a.copy()
    return out


def barrier(errors) -> float:
    """Instability of one path: max error along it minus the mean of its endpoint errors.
    `errors` are ordered by alpha, first and last at the endpoints."""
    errors = np.asarray(errors, dtype=np.float64)
    return float(errors.max() - (errors[0] + errors[-1]) / 2)


def evaluate_path(model, w1: dict, w2: dict, points: np.ndarray, splits: dict, bn_inputs=None,
                  precision: str = "fp32", stop=None) -> list[dict]:
    """Rows (alpha, split, loss, error) along the path for every split in `splits`
    (name -> lth.nn.training.Split). `bn_inputs`: a list of input batches on which BatchNorm
    statistics are recomputed at each alpha (None: the model has no BatchNorm). `precision`:
    the trainings' arithmetic (lth.nn.numerics). `stop`: lth.runtime.job.StageJob.stop, asked at each alpha."""
    import torch

    from lth.runtime.lifeline import check
    from lth.nn.training import evaluate
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    device = next(model.parameters()).device
    rows = []
    for alpha in points:
        check(stop, f"alpha {float(alpha):g}")
        state = interpolate(w1, w2, float(alpha))
        with torch.no_grad():
            model.load_state_dict({k: torch.from_numpy(v).to(device) for k, v in state.items()})
        if norms and bn_inputs:
            recompute_batchnorm(model, norms, bn_inputs, precision)
        for name, split in splits.items():
            loss, accuracy = evaluate(model, split, precision=precision)
            rows.append({"alpha": float(alpha), "split": name, "loss": loss, "error": 1.0 - accuracy})
    return rows


def recompute_batchnorm(model, norms: list, batches: list, precision: str = "fp32") -> None:
    """Fresh running statistics: reset, then a cumulative average (momentum None) over
    `batches` in training mode, without gradients, in the trainings' arithmetic."""
    import torch

    from lth.nn.numerics import autocast
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    with torch.no_grad():
        for x in batches:
            with autocast(precision, x.device):
                model(x)
    model.train(was_training)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


def summarise(paths: pd.DataFrame, threshold: float, matching: float) -> pd.DataFrame:
    """One row per network (run, level, variant, k): instability per split as mean and std
    over its pairs, stable (test instability < threshold), its test accuracy (mean of the
    copies), the dense network's, and matching (accuracy drop < `matching`).

    `paths`: rows of every pair's path with columns run, lottery, level, variant, k, pair,
    alpha, split, loss, error, weights_remaining_pct, dense_test_accuracy."""
    keys = ["run", "lottery", "level", "variant", "k"]
    per_pair = []
    for (*key, pair, split), rows in paths.groupby(keys + ["pair", "split"], sort=False):
        rows = rows.sort_values("alpha")
        per_pair.append({**dict(zip(keys, key)), "pair": pair, "split": split,
                         "instability": barrier(rows.error.to_numpy()),
                         "endpoint_accuracy": 1 - (rows.error.iloc[0] + rows.error.iloc[-1]) / 2,
                         "weights_remaining_pct": rows.weights_remaining_pct.iloc[0],
                         "dense_test_accuracy": rows.dense_test_accuracy.iloc[0]})
    pairs = pd.DataFrame(per_pair)
    out = []
    for key, rows in pairs.groupby(keys, sort=False):
        test, train = rows[rows.split == "test"], rows[rows.split == "train"]
        accuracy = float(test.endpoint_accuracy.mean())
        dense = float(test.dense_test_accuracy.iloc[0])
        row = {**dict(zip(keys, key)), "weights_remaining_pct": float(rows.weights_remaining_pct.iloc[0]),
               "pairs": len(test),
               "instability_test": float(test.instability.mean()),
               "instability_test_std": float(test.instability.std(ddof=1)) if len(test) > 1 else float("nan"),
               "instability_train": float(train.instability.mean()) if len(train) else float("nan"),
               "test_accuracy": accuracy, "dense_test_accuracy": dense,
               "accuracy_drop": dense - accuracy}
        row["stable"] = bool(row["instability_test"] < threshold)
        row["matching"] = bool(row["accuracy_drop"] < matching)
        out.append(row)
    return pd.DataFrame(out)
