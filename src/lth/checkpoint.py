"""Resumable training checkpoints, kept outside a stage's declared outputs (Snakemake deletes
those before it reruns a job) and written atomically (write, then rename).

A checkpoint holds everything the loop needs to continue bit for bit: model and optimizer
tensors, the iteration, the metrics so far and the global RNG states (dropout draws from the
CPU generator, or from the GPU's when training runs there). The data
order and augmentation need no state: they are seeded per epoch and per step.
A checkpoint that is unreadable, truncated, altered or from another stage is ignored with a
warning and training starts from the beginning; it is never loaded half-way. The file is a
magic line, the sha256 of the body, then the body (a torch.save zip): a flipped bit inside a
tensor still unpickles fine, so only the digest catches it.
"""
from __future__ import annotations

import hashlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .artifacts import atomic_path

MAGIC = b"lth-checkpoint-1\n"
KEYS = {"identity", "iteration", "model", "optimizer", "metrics", "rng", "device_rng", "train_seconds",
        "eval_seconds"}


@dataclass(frozen=True)
class Checkpointing:
    path: Path
    every: int        # iterations between checkpoints
    identity: str     # the stage ID: a checkpoint of any other stage is ignored


def save(ckpt: Checkpointing, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save({**payload, "identity": ckpt.identity}, buffer)
    body = buffer.getvalue()
    with atomic_path(ckpt.path) as tmp:
        Path(tmp).write_bytes(MAGIC + hashlib.sha256(body).digest() + body)


def _body(raw: bytes) -> bytes | None:
    """The torch.save bytes of a checkpoint file, or None unless its digest matches."""
    head = len(MAGIC) + 32
    if not raw.startswith(MAGIC) or len(raw) <= head:
        return None
    digest, body = raw[len(MAGIC):head], raw[head:]
    return body if hashlib.sha256(body).digest() == digest else None


def load(ckpt: Checkpointing, warn=None) -> dict | None:
    warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
    if not ckpt.path.exists():
        return None
    body = _body(ckpt.path.read_bytes())
    if body is None:
        warn(f"warning: ignoring checkpoint {ckpt.path}: truncated, altered or not a checkpoint "
             "(its sha256 does not match); starting over")
        return None
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
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
