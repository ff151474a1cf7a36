"""The curvature of the training loss: extreme eigenvalues of its Hessian, the early-phase
background of Frankle, Schwab & Morcos (ICLR 2020): at initialisation and through the early
phase a few large eigenvalues emerge, the bulk goes to zero and the negative ones shrink.

The Hessian is never formed (LeNet-300-100's would be 266k x 266k): `hvp_operator` gives
Hessian-vector products by double backprop (Pearlmutter 1994) over a whole split, `lanczos`
finds extreme eigenvalues from those products alone, `top_eigenvalues` combines the two.
Torch inside.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call
from torch.nn import functional as F

from lth.nn.training import Split, derived_seed

# The subset's draws: lth.nn.training keeps streams 1-4 (augmentation, dropout, gradient
# scores, ADMM), so this one picks other examples than any of them with the same seed.
CURVATURE_STREAM = 5

BREAKDOWN = 1e-12  # beta below this times the largest |T| entry: the Krylov space is invariant


def subset(split: Split, examples: int, seed: int) -> Split:
    """`examples` distinct examples of `split`: the first of a seeded permutation, drawn on
    a CPU generator (the same examples on every device)."""
    if not 1 <= examples <= len(split):
        raise ValueError(f"a curvature subset of {examples} examples from a split of {len(split)}")
    generator = torch.Generator().manual_seed(derived_seed(seed, 0, CURVATURE_STREAM))
    index = torch.randperm(len(split), generator=generator)[:examples].to(split.x.device)
    return Split(split.x.index_select(0, index), split.y.index_select(0, index))


def hvp_operator(model, mask: dict | None, split: Split, batch: int = 1000):
    """(n, matvec): the Hessian of the mean cross-entropy over all of `split` with respect to
    the surviving parameters, as a product. The vector is every trainable parameter
    (model.named_parameters order, each flattened row-major) less the coordinates `mask`
    prunes (tensor name -> numpy bool array, False = pruned): the Hessian of the loss as a
    function of the unpruned parameters alone, the pruned ones held at zero. The network is
    the masked one: the forward runs on w * mask (as lth.nn.criteria's scores), so dense
    weights with a mask give the pruned network's Hessian.

    matvec(v) (torch float64, length n, any device) returns H v (float64, v's device): the
    loss's gradient, dotted with v, differentiated again, batch by batch (`batch` examples
    each, every batch's product weighted by its size / len(split)). The model's arithmetic
    is its own dtype (float32 for the trained models; no autocast: double backprop under
    bfloat16 would measure the rounding); the product is summed in float64. The model runs
    in eval mode: BatchNorm normalises with its running statistics and does not update
    them, dropout is off, so H is a fixed matrix and matvec a function (on a GPU, bit for bit
    only under lth.nn.numerics.configure's deterministic mode; its "tf32" applies here too).
    Its weights, buffers, .grad and training flag are left as they were (torch.autograd.grad
    on detached copies)."""
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    mask = mask or {}
    unknown = sorted(set(mask) - {name for name, _ in params})
    if unknown:
        raise ValueError(f"mask names tensors the model has no trainable parameter for: {', '.join(unknown)}")
    if not len(split):
        raise ValueError("the Hessian of an empty split")
    keep = {}
    for name, p in params:
        if name in mask:
            m = np.asarray(mask[name], dtype=bool)
            if m.shape != tuple(p.shape):
                raise ValueError(f"{name}: mask of shape {m.shape}, parameter of shape {tuple(p.shape)}")
            keep[name] = torch.as_tensor(m, device=p.device)
    sizes = [int(keep[name].sum()) if name in keep else p.numel() for name, p in params]
    n = sum(sizes)
    device, dtype = params[0][1].device, params[0][1].dtype

    def matvec(v: torch.Tensor) -> torch.Tensor:
        if v.shape != (n,):
            raise ValueError(f"matvec takes a vector of length {n}, got shape {tuple(v.shape)}")
        leaves, directions = {}, {}
        for (name, p), piece in zip(params, torch.split(v.to(device, torch.float64), sizes)):
            direction = piece.to(p.dtype)
            if name in keep:  # v scattered onto the tensor's shape, 0 at pruned coordinates
                direction = torch.zeros(p.shape, dtype=p.dtype, device=device).index_put_((keep[name],), direction)
            directions[name] = direction.view(p.shape)
            # fresh leaves: the gradients never reach p.grad; detach() shares p's storage, never written
            leaves[name] = (p.detach() * keep[name] if name in keep else p.detach()).requires_grad_()
        out = torch.zeros(n, dtype=torch.float64, device=device)
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(split), batch):
                x = split.x[start:start + batch].to(device, dtype)
                y = split.y[start:start + batch].to(device)
                loss = F.cross_entropy(functional_call(model, leaves, (x,)), y)
                grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)
                terms = [(g * directions[name]).sum() for name, g in zip(leaves, grads)
                         if g is not None and g.requires_grad]
                if not terms:  # the loss is linear in every parameter on this batch: H = 0
                    continue
                products = torch.autograd.grad(torch.stack(terms).sum(), list(leaves.values()), allow_unused=True)
                # only the surviving coordinates: the restricted Hessian's rows (v is 0 at the pruned ones)
                pieces = [(torch.zeros_like(leaf) if h is None else h)[keep[name]] if name in keep
                          else (torch.zeros_like(leaf) if h is None else h).flatten()
                          for (name, leaf), h in zip(leaves.items(), products)]
                out += torch.cat(pieces).double() * (len(y) / len(split))  # weighted in float64
        finally:
            model.train(was_training)
        return out.to(v.device)

    return n, matvec


def lanczos(matvec, n: int, k: int, tolerance: float = 1e-3, max_iterations: int = 100, seed: int = 0,
            smallest: bool = True) -> dict:
    """Extreme eigenvalues of a symmetric n x n operator (`matvec`: float64 torch vector in,
    H v out) by Lanczos with full reorthogonalisation (every new vector orthogonalised
    against the whole basis, twice: no ghost copies of converged eigenvalues), from a
    random start drawn by numpy.random.default_rng(seed). The basis is kept as float64 CPU
    vectors: m x n x 8 bytes (100 iterations of a 11M-parameter net: 9 GB).

    After m steps the tridiagonal T_m's eigenpairs (theta_i, s_i) give Ritz values theta_i
    with residuals |H y_i - theta_i y_i| = |beta_m s_{m,i}| (beta_m the next vector's norm).
    Converged means the stated tolerance: every one of the k largest Ritz values has
    residual <= tolerance * max(|theta_i|, 1e-12); then an eigenvalue of H lies within that
    residual of each (symmetric H), i.e. within `tolerance` relative, and well separated ones
    are much closer (residual^2 / gap). With `smallest` (the default) the smallest Ritz value
    must also have residual <= tolerance * max_i |theta_i| (the spectrum's scale, not its own
    size: a smallest eigenvalue near 0 would otherwise never converge). It is >= H's smallest
    eigenvalue, as each of the largest is <= its eigenvalue (interlacing): stopping on the
    largest alone left it 5-15 % short in magnitude on LeNet-300-100 (13-22 steps where it
    needs 25-40), so negative curvature looked noisier than it is. It stops there, at
    max_iterations (converged False), or at n iterations (the Krylov space is all of R^n:
    the Ritz values are H's eigenvalues, converged True). tolerance=0 never stops early.

    Limits: one start vector's Krylov space holds one eigenvector per distinct eigenvalue,
    so a repeated eigenvalue appears once until that space is exhausted (beta_m ~ 0: then a
    fresh random vector orthogonal to the basis goes on, T's coupling 0); and a float32
    matvec is symmetric only to ~1e-7 relative, which bounds the attainable accuracy.

    Returns {"largest": min(k, m) largest Ritz values, descending; "smallest": the smallest
    (algebraic) Ritz value; "residuals": {"largest": [...], "smallest": r}, each reported
    value's residual; "iterations": m; "converged": bool}."""
    if n < 1 or k < 1 or max_iterations < 1 or tolerance < 0:
        raise ValueError(f"lanczos needs n, k, max_iterations >= 1 and tolerance >= 0; "
                         f"got n={n}, k={k}, max_iterations={max_iterations}, tolerance={tolerance}")
    rng = np.random.default_rng(seed)
    basis, alphas, betas = [], [], []

    def orthogonalise(w: torch.Tensor) -> None:
        for _ in range(2):  # "twice is enough": the second pass removes what rounding left of the first
            for q in basis:
                w -= torch.dot(q, w) * q

    def random_unit() -> torch.Tensor:
        w = torch.from_numpy(rng.standard_normal(n))
        orthogonalise(w)
        return w / w.norm()

    q = random_unit()
    limit = min(max_iterations, n)
    for m in range(1, limit + 1):
        basis.append(q)
        w = matvec(q).to("cpu", torch.float64)
        alphas.append(torch.dot(q, w).item())
        orthogonalise(w)  # against q and the previous q: the three-term recurrence, and the rest
        beta = w.norm().item()
        if beta <= BREAKDOWN * max(max(map(abs, alphas)), max(betas, default=0.0)):
            beta = 0.0  # invariant subspace: these Ritz values are exact eigenvalues
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, s = np.linalg.eigh(T)  # ascending
        residuals = beta * np.abs(s[-1])
        top = min(k, m)
        met = (tolerance > 0 and m >= min(k, n)
               and bool(np.all(residuals[-top:] <= tolerance * np.maximum(np.abs(theta[-top:]), 1e-12)))
               and (not smallest or residuals[0] <= tolerance * max(np.abs(theta).max(), 1e-12)))
        if met or m == limit:
            break
        betas.append(beta)
        q = w / beta if beta > 0 else random_unit()
    return {"largest": [float(t) for t in theta[::-1][:top]], "smallest": float(theta[0]),
            "residuals": {"largest": [float(r) for r in residuals[::-1][:top]], "smallest": float(residuals[0])},
            "iterations": m, "converged": met or m == n}


def top_eigenvalues(model, mask: dict | None, split: Split, k: int = 5, tolerance: float = 1e-3,
                    max_iterations: int = 100, seed: int = 0, batch: int = 1000) -> dict:
    """lanczos on hvp_operator(model, mask, split, batch): the k largest and the smallest
    eigenvalues of the loss's Hessian over `split` (a subset: lth.nn.curvature.subset), with
    "parameters": n, the surviving parameters' count (the Hessian's order)."""
    n, matvec = hvp_operator(model, mask, split, batch)
    return {**lanczos(matvec, n, k, tolerance, max_iterations, seed), "parameters": n}
