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

Onset of stability and matching (LMC Fig. 9: "the median iteration at which IMP and randomly
pruned subnetworks become stable and matching"), `onset`: a network is analysed at each
rewind point k of its sweep (the dense network: its lottery's own point and
`instability.points`; a pruned level: the `rewind.to` of each lottery, so lotteries that
differ only in `rewind.to` are one sweep). For each pair of copies, ordered by k in
iterations, its onset is the earliest k *from which on* the pair is stable (test instability
< threshold) at that k and at every later k of the sweep: an unstable k later in the sweep
resets it, and a pair that is not stable at the sweep's last k never becomes stable within
the sweep (no onset). The same for matching (the pair's endpoint test accuracy, the mean of
its two copies, less than `matching` below the dense network's) and for stable and matching
at once. The network's onset is the median over its pairs in iterations, a pair without one
counting as later than every k: the median is therefore finite only when a strict majority
of pairs get there (the paper counts only points "where a majority of subnetworks are
matching at some rewinding iteration"), and "never" (NaN, with the count of such pairs in
`never_*`) otherwise; with an even count it is the mean of the two middle onsets. Rewind
points written in epochs become iterations at the dense training's steps per epoch
(`resolved.steps_per_epoch` of its spec.json); `continue` (the previous level's trained
weights) is no point in training time and is left out of the sweep.

The pure functions (alphas, interpolate, barrier, summarise, onset) are numpy/pandas; only
`evaluate_path` needs torch (imported by its caller's process, not at module import).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from lth.plan.steps import Step


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


def pair_table(paths: pd.DataFrame) -> pd.DataFrame:
    """One row per pair and split (run, lottery, level, variant, k, pair, split): its
    instability (error barrier), endpoint accuracy (1 - the mean of the copies' errors), the
    network's weights remaining and the dense network's test accuracy. `paths`: as for
    `summarise`."""
    keys = ["run", "lottery", "level", "variant", "k"]
    per_pair = []
    for (*key, pair, split), rows in paths.groupby(keys + ["pair", "split"], sort=False):
        rows = rows.sort_values("alpha")
        per_pair.append({**dict(zip(keys, key)), "pair": pair, "split": split,
                         "instability": barrier(rows.error.to_numpy()),
                         "endpoint_accuracy": 1 - (rows.error.iloc[0] + rows.error.iloc[-1]) / 2,
                         "weights_remaining_pct": rows.weights_remaining_pct.iloc[0],
                         "dense_test_accuracy": rows.dense_test_accuracy.iloc[0]})
    return pd.DataFrame(per_pair)


def summarise(paths: pd.DataFrame, threshold: float, matching: float) -> pd.DataFrame:
    """One row per network (run, level, variant, k): instability per split as mean and std
    over its pairs, stable (test instability < threshold), its test accuracy (mean of the
    copies), the dense network's, and matching (accuracy drop < `matching`).

    `paths`: rows of every pair's path with columns run, lottery, level, variant, k, pair,
    alpha, split, loss, error, weights_remaining_pct, dense_test_accuracy."""
    keys = ["run", "lottery", "level", "variant", "k"]
    pairs = pair_table(paths)
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


# The onset table (LMC Fig. 9; the rule is in the module docstring).
CRITERIA = ("stable", "matching", "stable_matching")
ONSET_COLUMNS = ("run", "lottery", "level", "variant", "weights_remaining_pct", "pairs", "points", "sweep",
                 "median_k_stable", "median_k_matching", "median_k_stable_matching",
                 "never_stable", "never_matching", "never_stable_matching")
_REWIND = re.compile(r"rewind\.to=\S+\s?")


def sweep_label(label: str) -> str:
    """A run's or lottery's label without its rewind point: lotteries that differ only in
    `rewind.to` are one rewinding sweep ("imp" when nothing else is left)."""
    return _REWIND.sub("", str(label)).strip() or "imp"


def k_iterations(k: str, steps_per_epoch: int | None) -> float:
    """A rewind point ("500it", "2ep") in iterations; NaN for "continue" (no point in
    training time). A point in epochs needs the training's steps per epoch."""
    if k == "continue":
        return float("nan")
    step = Step.parse(k)
    if step.unit == "ep" and not steps_per_epoch:
        raise ValueError(f"rewind point {k} is in epochs but the training's steps per epoch are unknown "
                         "(its spec.json has no resolved.steps_per_epoch): rerun the dense training")
    return float(step.iterations(steps_per_epoch or 1))


def first_from(points, flags) -> float:
    """The earliest point from which every flag is true (points ascending, one flag each);
    inf when the last flag is false (never within the sweep)."""
    onset = float("inf")
    for point, flag in zip(reversed(list(points)), reversed(list(flags))):
        if not flag:
            break
        onset = float(point)
    return onset


def _sweeps(test: pd.DataFrame) -> pd.DataFrame:
    """The test rows with run and lottery relabelled by `sweep_label`. A network shared by
    several lotteries (the dense network's points) counts once (recognised by its numbers:
    the same k, pair, instability and accuracy in each lottery). Where that would put two
    different networks at the same k and pair (a random reinitialisation is at 0it in every
    lottery, on each lottery's own mask), that network keeps its own lottery: no sweep."""
    keys = ["run", "lottery", "level", "variant"]
    merged = test.assign(run=test.run.map(sweep_label), lottery=test.lottery.map(sweep_label))
    unique = merged.drop_duplicates(subset=keys + ["k_iterations", "pair", "instability", "endpoint_accuracy"])
    clash = unique.duplicated(subset=keys + ["k_iterations", "pair"], keep=False)
    if not clash.any():
        return unique
    bad = pd.MultiIndex.from_frame(unique.loc[clash, keys]).unique()
    own = test[pd.MultiIndex.from_frame(merged[keys]).isin(bad)]
    own = own.drop_duplicates(subset=keys + ["k_iterations", "pair"])
    return pd.concat([unique[~pd.MultiIndex.from_frame(unique[keys]).isin(bad)], own])


def onset(paths: pd.DataFrame, threshold: float, matching: float, steps_per_epoch=None) -> pd.DataFrame:
    """The onset table (LMC Fig. 9): per network (run, lottery, level, variant; lotteries
    that differ only in rewind.to merged into one sweep), the median over its pairs of the
    earliest rewind point k, in iterations, from which on the pair is stable, matching, and
    both (the module docstring has the rule); NaN where the median pair never gets there,
    `never_*` counting the pairs that do not. `points`: how many rewind points the sweep has,
    `sweep`: them as written.

    `paths`: as for `summarise`. `steps_per_epoch`: an int, {run label: int} (per run: a
    list-valued batch size changes it) or None (then every k must be in iterations)."""
    test = pair_table(paths)
    test = test[test.split == "test"].copy()
    per_run = steps_per_epoch if isinstance(steps_per_epoch, dict) else {}
    test["k_iterations"] = [k_iterations(k, per_run.get(run) if per_run else steps_per_epoch)
                            for k, run in zip(test.k, test.run)]
    test = test[test.k_iterations.notna()]
    test["stable"] = test.instability < threshold
    test["matching"] = (test.dense_test_accuracy - test.endpoint_accuracy) < matching
    test["stable_matching"] = test.stable & test.matching
    keys = ["run", "lottery", "level", "variant"]
    out = []
    for key, group in _sweeps(test).groupby(keys, sort=False):
        written = group.sort_values("k_iterations").drop_duplicates("k_iterations")
        row = {**dict(zip(keys, key)), "weights_remaining_pct": float(group.weights_remaining_pct.iloc[0]),
               "pairs": int(group.pair.nunique()), "points": len(written), "sweep": " ".join(written.k)}
        onsets = {criterion: [] for criterion in CRITERIA}
        for _, rows in group.groupby("pair", sort=True):
            rows = rows.sort_values("k_iterations")
            for criterion in CRITERIA:
                onsets[criterion].append(first_from(rows.k_iterations, rows[criterion]))
        for criterion in CRITERIA:
            values = np.asarray(onsets[criterion], dtype=np.float64)
            median = float(np.median(values))  # inf once at least half the pairs never get there
            row[f"median_k_{criterion}"] = median if np.isfinite(median) else float("nan")
        for criterion in CRITERIA:
            row[f"never_{criterion}"] = int(np.isinf(onsets[criterion]).sum())
        out.append(row)
    return pd.DataFrame(out, columns=list(ONSET_COLUMNS))
