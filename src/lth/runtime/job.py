"""One workflow job: `python -m lth run MANIFEST [execution flags]`.

Every rule's command has this fixed shape, whatever the sweep's size: the stage's kind,
settings, upstream IDs, input and output paths travel in a manifest file, never on the
command line (a sweep's summary once needed a 160 KB argument; Linux refuses 128 KiB).

Manifests live in <results>/.lth/manifests/<kind>/<id>.json, outside every stage directory
and outside Snakemake's inputs, so writing them never dirties a stage or triggers a rerun.
Their content is a function of the stage ID and the results folder only; the snakemake run
writes the missing or outdated ones before any job starts (the Snakefile's onstart).
Execution settings (threads, device, data folder, checkpoint interval) change how a stage
runs, never what it computes, and come as flags.

A job verifies every input against its stage's record (lth.store.records), runs the kind's
runner (lth.plan.registry), then writes spec.json and, last, record.json.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lth.nn.divergence import Diverged
from lth.plan import config as config_mod
from lth.plan import execution, registry
from lth.plan.ids import stage_id
from lth.runtime import lifeline
from lth.store import freshness, records
from lth.store.artifacts import ArtifactError, atomic_path, write_json

MANIFESTS = ".lth/manifests"


@dataclass
class StageJob:
    spec: dict                   # kind, id, version, level, settings, upstream (what spec.json holds)
    inputs: dict                 # name -> Path, each verified against its stage's record
    outputs: dict                # name -> Path, the kind's own files (spec and record are written here)
    dir: Path
    execution: object = field(default_factory=execution.Execution)  # lth.plan.execution
    resolved: dict = field(default_factory=dict)  # what the runner worked out (steps in iterations), for spec.json
    scheduler: "lifeline.Scheduler | None" = None  # the snakemake this job belongs to, if any
    # files a runner writes only under some settings (a training's telemetry.parquet): not
    # Snakemake outputs (a kind's outputs are one list for all its stages), but recorded and
    # verified like them; consumers read them beside a declared output (records.verify first)
    extra: dict = field(default_factory=dict)

    def cooperate(self) -> None:
        """The runner now asks `stop()` at safe points (a training step, a grid point): from
        here a gone snakemake no longer interrupts the job where it stands."""
        if self.scheduler is not None:
            self.scheduler.cooperate()

    def stop(self) -> str | None:
        """Why a long job should stop now (its snakemake is gone), or None."""
        return self.scheduler.gone() if self.scheduler else None

    @property
    def settings(self) -> dict:
        return self.spec["settings"]

    @property
    def checkpoint(self) -> Path:
        """The resumable checkpoint of a training stage: outside its outputs (Snakemake deletes
        those before a rerun), one file per stage ID."""
        return self.dir.parent.parent / "checkpoints" / f"{self.spec['id']}.ckpt"

    def start_torch(self, precision: str = "fp32") -> tuple:
        """The start-up of every job that runs a network: its CPU threads, its device (and, on
        a shared GPU, its lease, held as long as this process) and the numerics (before any
        CUDA operation). Returns (device, lease)."""
        import torch

        from lth.nn import devices, numerics
        if self.execution.threads:
            torch.set_num_threads(self.execution.threads)
        device, lease = devices.claim(self.execution.device, self.execution.gpu_slots)
        numerics.configure(precision, self.execution.deterministic)
        return device, lease

    def splits(self, info: dict, device: str, batch_size: int | None = None) -> dict:
        """The stage's dataset, checked against the model (classes, image shape) and its
        split, as tensors on `device`: {"train", "validation", "test"} (lth.nn.training.prepare)."""
        from lth.nn import data
        from lth.nn.training import prepare
        from lth.plan import models
        settings = self.settings
        dataset = data.load(settings["data"]["dataset"], self.execution.data_dir)
        data.check_fits(dataset, self.execution.data_dir, info["tensors"][info["output_layer"]][0],
                        models.get(info["name"]).input_shape, settings["data"]["validation_size"],
                        batch_size or settings["train"]["batch_size"])
        return prepare(dataset, settings["data"]["validation_size"], settings["data"]["split_seed"], device)


def manifest_path(root: str, kind: str, sid: str) -> str:
    return f"{root}/{MANIFESTS}/{kind}/{sid}.json"


def write_manifests(stages, root: str) -> int:
    """Write each stage's manifest where it is missing or differs; returns how many were
    written. Atomic, so concurrent snakemake runs on one results folder are safe."""
    written = 0
    for stage in stages:
        path = Path(manifest_path(root, stage.kind, stage.id))
        text = json.dumps(stage.manifest(), indent=1, sort_keys=True) + "\n"
        try:
            if path.read_text() == text:
                continue
        except OSError:
            pass
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        written += 1
    return written


def load(manifest: Path, how) -> StageJob:
    """The job a manifest describes, after checking that it is intact and that the code
    reading it hashes the stage to the same ID (same kind, same code version)."""
    try:
        data = json.loads(Path(manifest).read_text())
        kind = registry.get(data["kind"])
        spec = {key: data[key] for key in ("kind", "id", "version", "level", "settings", "upstream")}
        spec.update({key: data[key] for key in ("layout", "variant", "lottery", "related") if key in data})
        outputs = {name: Path(path) for name, path in data["outputs"].items()}
        inputs = {name: Path(path) for name, path in data["inputs"].items()}
        stage_dir = Path(data["dir"])
        missing = set(kind.outputs) - set(outputs)
        if missing:
            raise KeyError(f"outputs {sorted(missing)}")
    except FileNotFoundError:
        raise ArtifactError(f"manifest {manifest} is missing; run snakemake (not a dry run) to write it") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"manifest {manifest} is unreadable ({type(exc).__name__}: {exc}); delete it and "
                            "run snakemake again to rewrite it") from None
    if spec["version"] != kind.version:
        raise ArtifactError(f"manifest {manifest} was written for {kind.name} version {spec['version']}, this code "
                            f"is version {kind.version}; run snakemake again to plan with this code")
    expected = stage_id(spec["kind"], spec["settings"], spec["upstream"], config_mod.defaults(), kind.version,
                        spec.get("layout"))
    if expected != spec["id"]:
        raise ArtifactError(f"manifest {manifest} does not hash to its ID {spec['id']} (it gives {expected}): "
                            "altered, or written by other code; delete it and run snakemake again")
    return StageJob(spec, inputs, {name: outputs[name] for name in kind.outputs}, stage_dir, how)


def run(manifest: Path, how) -> None:
    # The snakemake that started this job, found before anything is read or written: if it
    # is already gone (killed while spawning us), stop now; while the job starts up (imports,
    # data), a watch thread interrupts it the moment it goes (lth.runtime.lifeline).
    scheduler = lifeline.Scheduler.find()
    if scheduler is not None:
        if not scheduler.alive():
            raise lifeline.Orphaned(f"the snakemake that started this job (pid {scheduler.pid}) was gone before it "
                                    "began; nothing of this stage is written, run snakemake again to redo it")
        scheduler.watch()
    try:
        _run(manifest, how, scheduler)
    except KeyboardInterrupt:
        if scheduler is None or not scheduler.gone():
            raise
        raise lifeline.Orphaned(f"{scheduler.gone()}: stopped before its stage was finished (its record is not "
                                "written, so it reruns); run snakemake again (after --unlock) to redo it") from None


def _run(manifest: Path, how, scheduler) -> None:
    job = load(manifest, how)
    job.scheduler = scheduler
    kind = registry.get(job.spec["kind"])
    # one writer per stage, for as long as this process lives (lth.runtime.lifeline)
    _lock = lifeline.StageLock(job.dir.parent.parent / ".lth" / "locks" / f"{job.spec['id']}.lock", job.dir)
    keep_log(job)  # only the lock's holder appends to the stage's log
    records.verify(job.inputs.values())
    job.dir.mkdir(parents=True, exist_ok=True)
    try:
        figures = kind.runner(job) or {}
    except Diverged as exc:  # name the stage; nothing of it is written
        raise Diverged(f"{kind.name} {job.dir}: {exc}") from None
    missing = [name for name, path in job.outputs.items() if not path.is_file()]
    if missing:
        raise ArtifactError(f"stage {job.dir}: the {kind.name} runner did not write {', '.join(missing)}")
    job.cooperate()  # the stage is computed: a gone snakemake no longer interrupts its last writes
    write_json(job.dir / registry.SPEC, {**job.spec, "resolved": job.resolved} if job.resolved else job.spec)
    records.write(job.dir, job.spec, {**{n: f for n, f in kind.files.items() if n != "record"}, **job.extra}, figures)
    freshness.remember(job.dir)  # what the next run's stat check compares against


class _Tee:
    """A stream that also appends what it is given to the stage's log."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def log_path(stage_dir: Path, kind: str, sid: str) -> Path:
    """The stage's log, every attempt appended (the rule's own log, <id>.attempt.log, is
    rewritten by the shell at each attempt, a refused one's too)."""
    return Path(stage_dir).parent.parent / "logs" / kind / f"{sid}.log"


def keep_log(job: StageJob) -> None:
    """From here on, everything this job prints is appended to its stage's log too, after a
    header line naming the attempt: time, pid, host, and where it resumes."""
    import datetime
    import socket
    path = log_path(job.dir, job.spec["kind"], job.spec["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a", buffering=1)
    resume = f"checkpoint {job.checkpoint}" if job.checkpoint.exists() else "the start"
    handle.write(f"=== attempt {datetime.datetime.now().isoformat(timespec='seconds')} pid {os.getpid()} "
                 f"host {socket.gethostname()}, from {resume}\n")
    sys.stdout, sys.stderr = _Tee(sys.stdout, handle), _Tee(sys.stderr, handle)


def main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m lth run", description="run one workflow stage")
    parser.add_argument("manifest", type=Path)
    execution.add_arguments(parser)
    args = parser.parse_args(argv)
    run(args.manifest, execution.from_arguments(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
