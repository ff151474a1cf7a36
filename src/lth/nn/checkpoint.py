"""Resumable training checkpoints, kept outside a stage's declared outputs (Snakemake deletes
those before it reruns a job) and written atomically (write, then rename).

A checkpoint holds everything the loop needs to continue bit for bit: model and optimizer
tensors, the iteration, the metrics so far and the global RNG states (dropout draws from the
CPU generator, or from the GPU's when training runs there). The data
order and augmentation need no state: they are seeded per epoch and per step.
A checkpoint that is unreadable, truncated, altered or from another stage is ignored with a
warning and training starts from the beginning; it is never loaded half-way. The file is a
magic line, the sha256 of the body, then the body (a torch.save zip): a flipped bit inside a
tensor still unpickles fine, so only the digest catches it. Being no plain torch file, it is
named `<stage ID>.ckpt` (versions before 2026-12-03 named it `.pt`; such a file is still
resumed from). The body is streamed to disk and
hashed as it is written (a VGG-16 checkpoint is ~120 MB: no copy of it is held in memory).

How often: every so many iterations ("5000it", "2ep"), every so much wall time ("10min",
"30s", "2h": a GPU run is checkpointed as often in minutes as a CPU run), or both
("5000it,10min": whichever comes first).
"""
from __future__ import annotations

import hashlib
import io
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lth.store.artifacts import atomic_path

MAGIC = b"lth-checkpoint-1\n"
# a training's telemetry rows (lth.nn.telemetry) and its captured weights (a trajectory), when it records them
OPTIONAL = {"telemetry", "snapshots"}
KEYS = {"identity", "iteration", "model", "optimizer", "metrics", "rng", "device_rng", "train_seconds",
        "eval_seconds"}


_SECONDS = {"s": 1, "min": 60, "h": 3600}


def parse_interval(text: str, steps_per_epoch: int) -> tuple[int, float | None]:
    """(iterations or 0, seconds or None) of a checkpoint_every value (module docstring)."""
    from lth.plan.steps import Step
    iterations, seconds = 0, None
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    timed = [re.fullmatch(r"0*([1-9][0-9]*)(s|min|h)", part) for part in parts]
    if len(parts) > 2 or len({match is None for match in timed}) < len(parts):
        raise ValueError(f"checkpoint_every {text!r}: give steps, a wall time, or one of each (5000it,10min)")
    for part, match in zip(parts, timed):
        if match:
            seconds = int(match.group(1)) * _SECONDS[match.group(2)]
        elif part.isdigit():  # a bare integer: iterations (as the schema allows)
            iterations = int(part)
        else:
            iterations = Step.parse(part).iterations(steps_per_epoch)
    return iterations, seconds


@dataclass
class Checkpointing:
    path: Path
    every: int                      # iterations between checkpoints (0: by time only)
    identity: str                   # the stage ID: a checkpoint of any other stage is ignored
    seconds: float | None = None    # wall time between checkpoints (None: by iterations only)
    _last: float = field(default_factory=lambda: time.monotonic(), repr=False)  # when the job started

    def due(self, done: int) -> bool:
        """Whether a checkpoint is due after `done` iterations (a clock read: ~50 ns)."""
        return bool(self.every and done % self.every == 0) or (
            self.seconds is not None and time.monotonic() - self._last >= self.seconds)


class _HashingWriter:
    """A file that hashes what is written through it (torch.save writes in chunks)."""

    def __init__(self, handle):
        self.handle, self.digest = handle, hashlib.sha256()

    def write(self, chunk) -> int:
        self.digest.update(chunk)
        return self.handle.write(chunk)

    def flush(self) -> None:
        self.handle.flush()


def save(ckpt: Checkpointing, payload: dict) -> None:
    with atomic_path(ckpt.path) as tmp, open(tmp, "wb") as handle:
        handle.write(MAGIC + bytes(32))  # the digest's place, filled in once the body is written
        writer = _HashingWriter(handle)
        torch.save({**payload, "identity": ckpt.identity}, writer)
        handle.seek(len(MAGIC))
        handle.write(writer.digest.digest())
    ckpt._last = time.monotonic()


def _body(raw: bytes) -> bytes | None:
    """The torch.save bytes of a checkpoint file, or None unless its digest matches."""
    head = len(MAGIC) + 32
    if not raw.startswith(MAGIC) or len(raw) <= head:
        return None
    body = memoryview(raw)[head:]  # no copy of a large body
    return body if hashlib.sha256(body).digest() == raw[len(MAGIC):head] else None


def _names(ckpt: Checkpointing) -> tuple[Path, Path]:
    """Its name, then the name versions before 2026-12-03 gave it."""
    return ckpt.path, ckpt.path.with_suffix(".pt")


def _found(ckpt: Checkpointing) -> Path | None:
    """The checkpoint file on disk, under either name."""
    return next((p for p in _names(ckpt) if p.exists()), None)


def load(ckpt: Checkpointing, warn=None) -> dict | None:
    warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
    path = _found(ckpt)
    if path is None:
        return None
    body = _body(path.read_bytes())
    if body is None:
        warn(f"warning: ignoring checkpoint {path}: truncated, altered or not a checkpoint "
             "(its sha256 does not match); starting over")
        return None
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, ...: all mean "do not trust it"
        warn(f"warning: ignoring unreadable checkpoint {path} ({type(exc).__name__}); starting over")
        return None
    if not isinstance(payload, dict) or set(payload) - OPTIONAL != KEYS:
        warn(f"warning: ignoring checkpoint {path} with unexpected contents; starting over")
        return None
    if payload["identity"] != ckpt.identity:
        warn(f"warning: ignoring checkpoint {path} of stage {payload['identity']}, not {ckpt.identity}")
        return None
    return payload


def remove(ckpt: Checkpointing) -> None:
    for path in _names(ckpt):
        path.unlink(missing_ok=True)
