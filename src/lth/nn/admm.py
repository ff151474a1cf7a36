"""ADMM pruning (Zhang et al., ECCV 2018, "A systematic DNN weight pruning framework using
ADMM"), used as a mask generator by Liu et al. (ICML 2021, Figs. 6-7).

The problem: minimise the loss f(W) subject to W in S, S = "at most counts[name] nonzeros in
each constrained tensor (within its current mask)". ADMM splits it with a copy Z in S and a
scaled dual U, and alternates
  W-step: SGD/Adam steps on f(W) + (rho/2) * ||W - Z + U||^2   (Z, U fixed),
  Z-step: Z = project(W + U)   (Euclidean projection onto S: keep the largest |entries|),
  U-step: U = U + W - Z,
with rho raised over the run, so that W is pulled ever harder into S. At the end W lies close
to S, so cutting W to its own largest entries (hard_cut: the mask) costs little accuracy;
the caller then retrains with that mask.

DEFAULTS (overridable per setting):
- rho: the initial penalty rho. Zhang et al. raise rho over the run, e.g. 1e-4 -> 1e-2
  (../shared/notes/PAPERS.md); 1e-3 is inside that range.
- rho_growth: rho is multiplied by it at every dual update ("raised over the run"): the
  default run's 9 updates take rho from 1e-3 to 1e-3 * 1.3**9 ~ 1.06e-2 for its last W-step.
- iterations: the length of the ADMM training, a Step ("3000it", "2ep": lth.plan.steps).
- update_every: the W-step length: the Z- and U-updates (and the growth of rho) come every
  so many steps, never after the last one (3000 / 300: 10 W-steps, 9 dual updates).
These are this project's choices within the paper's description, not numbers it reports.

The W-step uses the recipe's optimizer at its constant base rate train_settings["lr"]: no
warmup and no milestones, since ADMM starts from an already trained network (a schedule
meant for training from scratch would only re-heat it).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from lth.nn import numerics, optim
from lth.nn.divergence import Diverged
from lth.nn.pruning import _prune_ranked
from lth.nn.training import (ADMM_STREAM, DROPOUT_STREAM, apply_mask, augment, augment_draws, derived_seed,
                             epoch_order, to_device)
from lth.plan.steps import Step, epoch_steps

DEFAULTS = {"rho": 1e-3, "rho_growth": 1.3, "iterations": "3000it", "update_every": "300it"}

# ADMM draws its data order, crops/flips and dropout with training's functions, seeded by
# derived_seed(seed, 0, ADMM_STREAM): a run is deterministic, and its streams are apart from
# those of the training that made its start weights (order (seed, epoch), augmentation
# (seed, it, AUGMENT_STREAM), dropout (seed, 0, DROPOUT_STREAM): lth.nn.training).


def keep_largest(values: np.ndarray, surviving: np.ndarray, count: int) -> np.ndarray:
    """Bool array shaped like `values`: the `count` survivors of largest |value|. Ties are
    broken as lth.nn.pruning ranks them (the earlier position is dropped first), so that a
    mask from ADMM and one from magnitude pruning agree on equal weights."""
    surviving = np.asarray(surviving, dtype=bool)
    alive = int(surviving.sum())
    if not 0 <= count <= alive:
        raise ValueError(f"cannot keep {count} of {alive} surviving weights")
    keep = _prune_ranked(np.abs(np.asarray(values)).ravel(), surviving.ravel(), alive - count)
    return keep.reshape(surviving.shape)


def _surviving(mask, name, shape) -> np.ndarray:
    keep = (mask or {}).get(name)
    return np.ones(shape, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)


def project(values: dict, mask: dict | None, counts: dict) -> dict:
    """Pi_S: each tensor named in `counts` with all but its `count` largest surviving entries
    set to 0 (torch tensors stay torch tensors on their device, numpy arrays numpy); tensors
    not in `counts` are unconstrained, so returned unchanged."""
    out = dict(values)
    for name, count in counts.items():
        v = values[name]
        if isinstance(v, torch.Tensor):
            # ranked on the CPU in numpy: the exact tie rule of lth.nn.pruning (few calls per run)
            keep = keep_largest(v.detach().cpu().numpy(), _surviving(mask, name, tuple(v.shape)), count)
            out[name] = torch.where(torch.from_numpy(keep).to(v.device), v, torch.zeros_like(v))
        else:
            out[name] = np.where(keep_largest(v, _surviving(mask, name, v.shape), count), v, 0).astype(v.dtype)
    return out


def hard_cut(weights: dict, mask: dict | None, counts: dict) -> dict:
    """The final mask: each tensor in `counts` cut to the `count` largest |W| within its mask
    (W's own support, not Z's: after ADMM the two nearly agree, and W is what is retrained);
    the other tensors of `mask` keep theirs."""
    out = {name: np.asarray(keep, dtype=bool) for name, keep in (mask or {}).items()}
    for name, count in counts.items():
        w = np.asarray(weights[name])
        out[name] = keep_largest(w, _surviving(mask, name, w.shape), count)
    return out


def run(model, mask: dict | None, splits: dict, train_settings: dict, settings: dict, counts: dict,
        log=None) -> list[dict]:
    """Train `model` in place by ADMM from its current (trained) weights; return the history
    rows {iteration, tensor, rho, distance, residual, loss}: one per constrained tensor at
    iteration 0, at every dual update and at the end. distance = ||W - Pi_S(W)|| / ||W|| (how
    far W is from the sparse set: what ADMM drives down), residual = ||W - Z|| (the primal
    residual, after the Z-update), rho = the rho in force over the interval ending there,
    loss = mean minibatch cross-entropy over that interval (None at iteration 0).
    `mask`: current survivors (None or a missing name: all survive), held exactly at 0."""
    if not counts:
        raise ValueError("ADMM needs at least one tensor to constrain (counts is empty)")
    log = log or (lambda line: None)
    settings = {**DEFAULTS, **settings}
    train_split = splits["train"]
    batch = train_settings["batch_size"]
    steps_per_epoch = epoch_steps(len(train_split), batch)
    total = Step.parse(settings["iterations"]).iterations(steps_per_epoch)
    every = max(1, Step.parse(settings["update_every"]).iterations(steps_per_epoch))
    rho, growth = float(settings["rho"]), float(settings["rho_growth"])
    device = train_split.x.device
    precision = train_settings.get("precision", "fp32")
    seed = derived_seed(train_settings["seed"], 0, ADMM_STREAM)

    masked = apply_mask(model, mask)  # zeroes the pruned weights (training.py's scheme)
    masked_params, masks = [p for p, _ in masked], [m for _, m in masked]
    params = [p for p in model.parameters() if p.requires_grad]
    named = dict(model.named_parameters())
    names = list(counts)
    weights = [named[n] for n in names]
    optimizer = optim.make(params, train_settings)  # its base lr throughout: no schedule (docstring)
    if train_settings.get("dropout"):
        torch.manual_seed(derived_seed(seed, 0, DROPOUT_STREAM))

    def current() -> dict:
        return {n: w.detach() for n, w in zip(names, weights)}

    with torch.no_grad():
        z = [project(current(), mask, counts)[n] for n in names]  # Z0 = Pi_S(W0), U0 = 0
        u = [torch.zeros_like(w) for w in weights]
        target = [zn.clone() for zn in z]  # Z - U, fixed over a W-step
    history = []

    def record(iteration, loss):
        with torch.no_grad():
            if not all(bool(torch.isfinite(w).all()) for w in params):
                raise Diverged(f"ADMM diverged at iteration {iteration}: a weight is not finite "
                               f"(rho {rho:g}); lower admm rho or train.lr")
            nearest = project(current(), mask, counts)
            for n, w, zn in zip(names, weights, z):
                norm = w.double().norm().item()
                history.append({"iteration": iteration, "tensor": n, "rho": rho,
                                "distance": (w - nearest[n]).double().norm().item() / norm if norm else 0.0,
                                "residual": (w - zn).double().norm().item(), "loss": loss})
        worst = max(r["distance"] for r in history[-len(names):]) if names else 0.0
        log(f"admm it {iteration}/{total} rho={rho:.3g} loss={loss if loss is None else round(loss, 4)} "
            f"max_distance={worst:.4f}")

    record(0, None)
    model.train()
    x, y = train_split.x, train_split.y
    interval_loss, interval_steps = torch.zeros((), dtype=torch.float64, device=device), 0
    for it in range(total):
        if it == 0 or it % steps_per_epoch == 0:  # as training.train: one permutation per epoch
            order = epoch_order(len(train_split), seed, it // steps_per_epoch, device)
            batches = order[:steps_per_epoch * batch].view(steps_per_epoch, -1)
            if train_settings.get("augment"):
                drawn_from = it
                offsets, flips = to_device(augment_draws(
                    seed, it, min(total, (it // steps_per_epoch + 1) * steps_per_epoch), batch), device)
        index = batches[it % steps_per_epoch]
        inputs = x.index_select(0, index)
        if train_settings.get("augment"):
            inputs = augment(inputs, offsets[it - drawn_from], flips[it - drawn_from])
        with numerics.autocast(precision, device):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float(), y.index_select(0, index))
        for p in params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            # gradient of (rho/2)||W - (Z - U)||^2 added in place (no autograd graph, no temporaries)
            grads = [w.grad for w in weights]
            torch._foreach_add_(grads, [w.detach() for w in weights], alpha=rho)
            torch._foreach_add_(grads, target, alpha=-rho)
        if masked:
            torch._foreach_mul_([p.grad for p in masked_params], masks)  # pruned weights stay 0
        optimizer.step()
        interval_loss += loss.detach().double()
        interval_steps += 1
        done = it + 1
        if done % every == 0 or done == total:
            mean = interval_loss.item() / interval_steps
            if not math.isfinite(mean):
                raise Diverged(f"ADMM diverged by iteration {done}: mean training loss {mean} "
                               f"(rho {rho:g}); lower admm rho or train.lr")
            interval_loss.zero_()
            interval_steps = 0
            if done < total:  # dual update: Z = Pi_S(W + U), U = U + W - Z
                with torch.no_grad():
                    shifted = {n: w.detach() + un for n, w, un in zip(names, weights, u)}
                    projected = project(shifted, mask, counts)
                    z = [projected[n] for n in names]
                    torch._foreach_add_(u, torch._foreach_sub([w.detach() for w in weights], z))
                    target = torch._foreach_sub(z, u)
            record(done, mean)
            if done < total:
                rho *= growth
    return history
