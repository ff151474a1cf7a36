"""Adam and SGD that call torch's fused CPU/CUDA kernels directly.

Why not torch.optim: constructing any torch.optim optimizer imports torch._dynamo, ~1.2 s of
every training process here (a LeNet level trains in ~25 s), and each step() spends ~60 us
on bookkeeping around a ~150 us kernel. The state (float32 step counter, exp_avg,
exp_avg_sq; momentum buffers) and the kernels are those of torch.optim.Adam/SGD with
fused=True, so the results are bit-identical to them (tests/test_training.py checks it).
Semantics: Adam with L2 weight decay added to the gradient (not AdamW); SGD with
momentum, no dampening, no Nesterov.
"""
from __future__ import annotations

import torch


class FusedAdam:
    def __init__(self, params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        device = self.params[0].device
        self.step_count = torch.zeros((), dtype=torch.float32, device=device)
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    def step(self) -> None:
        self.step_count.add_(1)
        torch._fused_adam_(self.params, [p.grad for p in self.params], self.exp_avg, self.exp_avg_sq, [],
                           [self.step_count] * len(self.params), lr=self.lr, beta1=self.betas[0],
                           beta2=self.betas[1], weight_decay=self.weight_decay, eps=self.eps,
                           amsgrad=False, maximize=False)

    def state(self) -> dict:
        """Per-parameter state, as tensors (for tests and checkpoints)."""
        return {"step": self.step_count, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load(self, state: dict) -> None:
        with torch.no_grad():
            self.step_count.copy_(state["step"])
            for mine, saved in zip(self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]):
                mine.copy_(saved)


class FusedSGD:
    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list | None = None  # created by the first step, as torch does

    def step(self) -> None:
        grads = [p.grad for p in self.params]
        first = self.momentum != 0 and self.buffers is None
        if first:
            self.buffers = [torch.empty_like(g) for g in grads]
        torch._fused_sgd_(self.params, grads, self.buffers if self.momentum else [],
                          weight_decay=self.weight_decay, momentum=self.momentum, lr=self.lr,
                          dampening=0.0, nesterov=False, maximize=False, is_first_step=first)

    def state(self) -> dict:
        return {"momentum_buffer": self.buffers or []}

    def load(self, state: dict) -> None:
        saved = state["momentum_buffer"]
        self.buffers = [b.to(p.device).clone() for b, p in zip(saved, self.params)] if saved else None


def make(params, settings: dict):
    """The optimizer a training stage's settings ask for."""
    params = list(params)
    # canonical settings write integral numbers as ints (lr: 1); the fused kernels take floats
    name, lr, wd = settings["optimizer"], float(settings["lr"]), float(settings["weight_decay"])
    if any(p.device.type not in ("cpu", "cuda") for p in params):
        raise ValueError(f"fused optimizers run on cpu and cuda, not {params[0].device.type}")
    if name == "adam":
        return FusedAdam(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return FusedSGD(params, lr=lr, momentum=float(settings["momentum"]), weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}; known: adam, sgd")
