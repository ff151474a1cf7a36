"""A job's ties to the world: the snakemake that started it, and the one process allowed to
write its stage.

- Scheduler: the nearest ancestor process that is a snakemake (found with psutil). A
  training job checks about once a second that it still lives; when it is gone (killed with
  -9, its node lost), the job saves its checkpoint and stops, so a rerun with
  `--rerun-incomplete` resumes it instead of an orphan finishing unseen, or two processes
  writing one stage. A parent-death signal would not do: the job's parent is the shell
  snakemake starts, which outlives snakemake.
- StageLock: an exclusive flock on <results>/.lth/locks/<id>.lock, held for the life of the
  process (the kernel frees it when the process dies), so a second process for the same
  stage fails in one line instead of writing beside the first.

Torch-free.
"""
from __future__ import annotations

import _thread
import fcntl
import os
import sys
import threading
import time
from pathlib import Path

import psutil

from lth.store.artifacts import ArtifactError


def _is_snakemake(process: psutil.Process) -> bool:
    try:
        argv = process.cmdline()
    except psutil.Error:
        return False
    return any(Path(arg).name in ("snakemake", "snakemake.exe") or arg == "snakemake" for arg in argv[:3])


def started(process: psutil.Process) -> float:
    """When `process` started, in seconds: since boot from /proc/<pid>/stat where there is one
    (the kernel's clock ticks, which never change), else psutil's create_time. Not create_time
    on Linux: it adds the boot time that /proc/stat derives from the wall clock, so an NTP
    adjustment moves it by a second, and a job once took its living snakemake for gone."""
    try:
        stat = Path(f"/proc/{process.pid}/stat").read_bytes()
        return int(stat[stat.rindex(b")") + 2:].split()[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
    except (OSError, ValueError, IndexError):
        return process.create_time()


class Orphaned(RuntimeError):
    """The job's snakemake is gone; the job saved what it had and stopped (one line)."""


ENV = "LTH_SCHEDULER"  # "pid:start time" of the snakemake that plans the jobs (set at parse time)


def announce() -> None:
    """Name this process (a snakemake parsing the Snakefile) as the scheduler of the jobs it
    starts: they inherit the variable, so a job knows its snakemake even when that one is
    already gone by the time the job looks (an ancestor walk would find nothing then)."""
    me = psutil.Process()
    os.environ[ENV] = f"{me.pid}:{started(me)!r}"


class Scheduler:
    """The snakemake this job belongs to, watched by PID and start time (a PID can be reused;
    `started` says why not psutil's create_time).
    `watch` starts a thread that looks every 0.2 s: while the job starts up (imports, data)
    it interrupts it at once; once the job `cooperates` (a training loop that saves its
    checkpoint, a grid that stops at its next point), `gone()` tells it to stop."""

    def __init__(self, pid: int, started: float):
        self.pid, self.started = pid, started
        self._gone = threading.Event()
        self._interrupt = True

    @classmethod
    def find(cls) -> "Scheduler | None":
        announced = os.environ.get(ENV, "")
        if announced:
            pid, _, started = announced.partition(":")
            try:
                return cls(int(pid), float(started))
            except ValueError:
                pass
        try:  # started by hand or by an older Snakefile: the nearest snakemake ancestor
            process = psutil.Process(os.getppid())
            for _ in range(16):
                if process.pid <= 1:
                    return None
                if _is_snakemake(process):
                    return cls(process.pid, started(process))
                process = process.parent()
                if process is None:
                    return None
        except psutil.Error:  # an ancestor exited while we looked
            return None
        return None

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            # a zombie has exited: its parent simply has not reaped it yet
            return started(process) == self.started and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def watch(self, every: float = 0.2) -> None:
        def look():
            while self.alive():
                time.sleep(every)
            self._gone.set()
            if self._interrupt:
                _thread.interrupt_main()  # a KeyboardInterrupt in the job's main thread (lth.runtime.job)
        threading.Thread(target=look, name="lth-scheduler-watch", daemon=True).start()

    def cooperate(self) -> None:
        """From now on the job asks `gone()` and stops at a safe point itself."""
        self._interrupt = False

    def gone(self) -> str | None:
        """None while snakemake lives (or nobody watches); else why to stop."""
        return f"the snakemake that started this job (pid {self.pid}) is gone" if self._gone.is_set() else None


def check(stop, where: str) -> None:
    """For jobs without a checkpoint (interpolation, landscape): stop at once, with one line,
    when `stop()` (lth.runtime.job.StageJob.stop) says the snakemake that started the job is gone."""
    reason = stop() if stop is not None else None
    if reason:
        raise Orphaned(f"{reason}: stopped at {where}; nothing of this stage is written, "
                       "run snakemake again (after --unlock) to redo it")


class StageLock:
    """Held from construction to the end of the process."""

    def __init__(self, path: Path, stage_dir: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise ArtifactError(f"stage {stage_dir} is being written by another process (pid {holder}); let it "
                                "finish or stop it, then run snakemake again") from None
        except OSError as exc:  # a filesystem without flock (Lustre without -o flock, NFSv3 without lockd)
            print(f"warning: no lock for stage {stage_dir} ({exc.strerror} on {path.parent}); running unlocked",
                  file=sys.stderr, flush=True)
            return
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
