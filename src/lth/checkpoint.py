"""Resumable training checkpoints, kept outside a stage's declared outputs (Snakemake deletes
those before it reruns a job) and written atomically (write, then rename).

A checkpoint holds everything the loop needs to continue bit for bit: model and optimizer
tensors, the iteration, the metrics so far and the global RNG state (dropout). The data
order and augmentation need no state: they are seeded per epoch and per step.
A checkpoint that is unreadable, truncated or from another stage is ignored with a warning
and training starts from the beginning; it is never loaded half-way.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .artifacts import atomic_path

KEYS = {"identity", "iteration", "model", "optimizer", "metrics", "rng", "train_seconds", "eval_seconds"}


@dataclass(frozen=True)
class Checkpointing:
    path: Path
    every: int        # iterations between checkpoints
    identity: str     # the stage ID: a checkpoint of any other stage is ignored


def save(ckpt: Checkpointing, payload: dict) -> None:
    with atomic_path(ckpt.path) as tmp:
        torch.save({**payload, "identity": ckpt.identity}, tmp)


def load(ckpt: Checkpointing, warn=None) -> dict | None:
    warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
    if not ckpt.path.exists():
        return None
    try:
        payload = torch.load(ckpt.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, ...: all mean "do not trust it"
        warn(f"warning: ignoring unreadable checkpoint {ckpt.path} ({type(exc).__name__}); starting over")
        return None
    if not isinstance(payload, dict) or set(payload) != KEYS:
        warn(f"warning: ignoring checkpoint {ckpt.path} with unexpected contents; starting over")
        return None
    if payload["identity"] != ckpt.identity:
        warn(f"warning: ignoring checkpoint {ckpt.path} of stage {payload['identity']}, not {ckpt.identity}")
        return None
    return payload


def remove(ckpt: Checkpointing) -> None:
    ckpt.path.unlink(missing_ok=True)
