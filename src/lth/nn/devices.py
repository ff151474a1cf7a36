"""Which device a job trains on, and a lease so that concurrent jobs on a workstation with
several GPUs each get their own (or, with `gpu_slots`, share each GPU among a few).

Snakemake limits how many GPU jobs run at once (`--resources gpu=N`) but does not say which
GPU a job gets. A job therefore takes a lease: an exclusive, non-blocking flock on one lock
file per GPU slot, held by an open file descriptor for the life of the process, so the
kernel frees it however the process ends (kill -9 included). Leases are taken among the
GPUs the job sees: all of them, or those CUDA_VISIBLE_DEVICES lists (a shell exporting
`0,1,2,3` leases among those four). A single visible GPU (what SLURM gives a job asking for
one) needs no lease: the job uses it. Lock files are named by the physical GPU, so jobs with
different CUDA_VISIBLE_DEVICES still agree; inside a SLURM allocation of several GPUs (SLURM
numbers them from 0 in every job) they are leased per job, by index. The directory is
shared by every user of the machine (world-writable and sticky, like /tmp). Torch-free: the lease is taken before CUDA starts.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import stat
import sys
import time
from pathlib import Path

# Not under $TMPDIR: that is often per user (or per job), and leases must be seen by all.
DEFAULT_LOCK_DIR = Path(os.environ.get("LTH_LEASE_DIR", "/tmp/lth-gpu-leases"))
# Values of CUDA_VISIBLE_DEVICES that hide every GPU (SLURM writes NoDevFiles on some setups).
_NO_DEVICES = {"", "-1", "none", "nodevfiles", "void"}


class DeviceError(RuntimeError):
    """A device setting this machine cannot honour; the message says how to fix it."""


def gpu_expected() -> bool:
    """Parse-time guess for `device: auto` (no torch): an NVIDIA driver is present."""
    return Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None


def visible(environ=os.environ) -> list[str] | None:
    """The GPUs CUDA_VISIBLE_DEVICES lists (None when it is unset: all of them)."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    if value.strip().lower() in _NO_DEVICES:
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def allocated(environ=os.environ) -> str | None:
    """The GPUs a scheduler allocated to this job, as it said so, or None."""
    for key in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "GPU_DEVICE_ORDINAL"):
        if environ.get(key, "").strip():
            return f"{key}={environ[key].strip()}"
    if environ.get("SLURM_JOB_ID") and visible(environ):
        return f"CUDA_VISIBLE_DEVICES={environ['CUDA_VISIBLE_DEVICES']}"
    return None


class Lease:
    def __init__(self, index: int, handle, slot: int = 0):
        self.index = index  # the GPU's index among those this job sees (torch's cuda:<index>)
        self.slot = slot
        self._handle = handle  # keeps the flock as long as the object (or the process) lives

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _shared_dir(lock_dir: Path) -> None:
    """Create the lease directory usable by every user, whatever this user's umask (created
    with umask 0, so another user never sees it narrower, even for a moment)."""
    if not lock_dir.is_dir():
        missing = [p for p in (lock_dir, *lock_dir.parents) if not p.is_dir()]
        old = os.umask(0)
        try:  # each missing folder, outermost first, 1777 (mkdir's parents=True would give 777)
            for folder in reversed(missing):
                folder.mkdir(mode=0o1777, exist_ok=True)
        finally:
            os.umask(old)


def _open_lock(path: Path):
    old = os.umask(0)  # mode 666 from the start: another user may open it at once
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        what = (f"GPU lease file {path} is not writable by this user; ask its owner to `chmod 666` it"
                if path.exists() else
                f"GPU lease folder {path.parent} is not writable by this user; ask its owner to `chmod 1777` it")
        raise DeviceError(f"{what}, or set LTH_LEASE_DIR to another folder for all users") from None
    finally:
        os.umask(old)
    return os.fdopen(fd, "r+")


def _file_name(name: str) -> str:
    """A CUDA_VISIBLE_DEVICES entry as part of a file name (MIG names hold slashes)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def try_lease(count: int, lock_dir: Path = DEFAULT_LOCK_DIR, names: list[str] | None = None,
              slots: int = 1) -> Lease | None:
    """A free slot on one of `count` GPUs, locked for this process; None if all are taken.
    `names` are the GPUs' physical names (CUDA_VISIBLE_DEVICES entries), which name the lock
    files; by default 0..count-1. Slots fill GPU by GPU, the least used first."""
    _shared_dir(lock_dir)
    names = names or [str(i) for i in range(count)]
    for slot in range(slots):  # every GPU's first slot before any second one
        for index in range(count):
            name = _file_name(names[index])
            handle = _open_lock(lock_dir / (f"gpu{name}.lock" if slot == 0 else f"gpu{name}.slot{slot}.lock"))
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return Lease(index, handle, slot)
    return None


def lease(count: int, lock_dir: Path = DEFAULT_LOCK_DIR, poll: float = 1.0, log=None,
          names: list[str] | None = None, slots: int = 1) -> Lease:
    """Wait until a GPU slot is free and lease it (Snakemake's gpu resource normally makes
    the wait zero; it matters when other programs hold leases too)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    waited = False
    while True:
        got = try_lease(count, lock_dir, names, slots)
        if got is not None:
            return got
        if not waited:
            log(f"all {count * slots} GPU slots are leased ({lock_dir}); waiting for one")
            waited = True
        time.sleep(poll)


def _unusable(requested: str, environ) -> DeviceError:
    import torch
    built = torch.version.cuda
    why = (f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)" if built is None else
           f"torch {torch.__version__} (built for CUDA {built}, torch.version.cuda) cannot use it: "
           "the driver is older than that CUDA, or the device is not visible")
    where = allocated(environ)
    fix = ("install a torch wheel whose CUDA the node's driver supports (nvidia-smi shows the highest), "
           "or set device: cpu and stop asking for GPUs")
    if where:
        return DeviceError(f"device: {requested}: the scheduler allocated a GPU ({where}) but {why}; {fix}")
    return DeviceError(f"device: {requested} was asked for but no GPU is usable here: {why}; {fix}")


def resolve(requested: str, environ=os.environ, count=None, lock_dir: Path = DEFAULT_LOCK_DIR, slots: int = 1):
    """(torch device string, lease or None) for `device: auto | cpu | cuda`.

    `count` is the number of GPUs torch sees (torch.cuda.device_count() by default). `auto`
    falls back to the CPU only where no GPU was meant to be: a job a scheduler gave a GPU
    that torch cannot use stops with one line instead of training for days on the CPU."""
    if requested == "cpu":
        return "cpu", None
    if count is None:
        import torch
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        if requested == "cuda" or allocated(environ):
            raise _unusable(requested, environ)
        return "cpu", None
    if count == 1:
        return "cuda:0", None  # the only GPU this job sees (a SLURM job's own, say): use it
    names = visible(environ)
    job = environ.get("SLURM_JOB_ID")
    if job:  # several GPUs in one allocation: SLURM numbers them from 0 in every job, so
        lock_dir, names = lock_dir / f"slurm-{_file_name(job)}", None  # lease per job, by index
    got = lease(count, lock_dir, names=names[:count] if names else None, slots=slots)
    return f"cuda:{got.index}", got


def claim(requested: str, slots: int = 1):
    """resolve() for this process, with the chosen GPU made torch's current device."""
    device, got = resolve(requested, slots=slots)
    activate(device)
    return device, got


def activate(device: str) -> None:
    """Make the leased GPU torch's current device, so that anything created without an
    explicit device (the cuDNN handle, RNG calls, a library's scratch tensors) lands there."""
    if device.startswith("cuda"):
        import torch
        torch.cuda.set_device(torch.device(device))


def describe(device: str, lease: Lease | None, environ=os.environ) -> str:
    """One log line on where a job runs and why."""
    chosen = environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if lease is not None:
        slot = f", slot {lease.slot}" if lease.slot else ""
        among = f" among CUDA_VISIBLE_DEVICES={chosen}" if chosen else ""
        return f"device {device} (leased GPU {lease.index}{slot}{among})"
    if device.startswith("cuda") and chosen and environ.get("SLURM_JOB_ID"):
        return f"device {device} (CUDA_VISIBLE_DEVICES={chosen} set by the scheduler; no lease)"
    if device.startswith("cuda"):
        return f"device {device} (the only GPU visible; no lease)"
    return f"device {device}"
