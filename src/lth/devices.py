"""Which device a job trains on, and a lease so that concurrent jobs on a workstation with
several GPUs each get their own.

Snakemake limits how many GPU jobs run at once (`--resources gpu=N`) but does not say which
GPU a job gets. A job therefore takes a lease: an exclusive, non-blocking flock on one lock
file per GPU, held by an open file descriptor for the life of the process, so the kernel
frees it however the process ends (kill -9 included). A scheduler that already set
CUDA_VISIBLE_DEVICES (SLURM does) has chosen the device: then no lease is taken.
Torch-free: the lease is taken before CUDA is initialised.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sys
import time
from pathlib import Path

DEFAULT_LOCK_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "lth-gpu-leases"


def gpu_expected() -> bool:
    """Parse-time guess for `device: auto` (no torch): an NVIDIA driver is present."""
    return Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None


class Lease:
    def __init__(self, index: int, handle):
        self.index = index
        self._handle = handle  # keeps the flock as long as the object (or the process) lives

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def try_lease(count: int, lock_dir: Path = DEFAULT_LOCK_DIR) -> Lease | None:
    """The first free GPU index in 0..count-1, locked for this process; None if all taken."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        handle = open(lock_dir / f"gpu{index}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return Lease(index, handle)
    return None


def lease(count: int, lock_dir: Path = DEFAULT_LOCK_DIR, poll: float = 1.0, log=None) -> Lease:
    """Wait until a GPU is free and lease it (Snakemake's gpu resource normally makes the
    wait zero; it matters when other programs hold leases too)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    waited = False
    while True:
        got = try_lease(count, lock_dir)
        if got is not None:
            return got
        if not waited:
            log(f"all {count} GPUs are leased ({lock_dir}); waiting for one")
            waited = True
        time.sleep(poll)


def resolve(requested: str, environ=os.environ, count=None, lock_dir: Path = DEFAULT_LOCK_DIR):
    """(torch device string, lease or None) for `device: auto | cpu | cuda`.

    `count` is the number of visible GPUs (torch.cuda.device_count() by default)."""
    if requested == "cpu":
        return "cpu", None
    if count is None:
        import torch
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        if requested == "cuda":
            raise RuntimeError("device: cuda was asked for but no GPU is visible here; "
                               "set device: cpu (or auto) in config.yaml")
        return "cpu", None
    if environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        return "cuda:0", None  # a scheduler chose: the job sees exactly its own GPU(s)
    got = lease(count, lock_dir)
    return f"cuda:{got.index}", got


def describe(device: str, lease: Lease | None, environ=os.environ) -> str:
    """One log line on where a job runs and why."""
    chosen = environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if lease is not None:
        return f"device {device} (leased GPU {lease.index})"
    if chosen:
        return f"device {device} (CUDA_VISIBLE_DEVICES={chosen} set by the scheduler; no lease)"
    return f"device {device}"
