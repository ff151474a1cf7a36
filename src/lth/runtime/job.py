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
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lth.plan import config as config_mod
from lth.runtime import lifeline
from lth.store import records
from lth.plan import registry
from lth.store.artifacts import ArtifactError, atomic_path, write_json
from lth.nn.divergence import Diverged
from lth.plan.ids import stage_id

MANIFESTS = ".lth/manifests"


@dataclass(frozen=True)
class Execution:
    """How a job runs (never part of a stage ID)."""
    threads: int | None = None
    device: str = "auto"
    data_dir: str | None = None
    checkpoint_every: str = "2000it"
    deterministic: bool = False
    divergence_factor: float = 10.0  # decides whether a result is accepted, not what it is
    gpu_slots: int = 1               # jobs sharing one GPU on a workstation (lth.nn.devices)


@dataclass
class StageJob:
    spec: dict                   # kind, id, version, level, settings, upstream (what spec.json holds)
    inputs: dict                 # name -> Path, each verified against its stage's record
    outputs: dict                # name -> Path, the kind's own files (spec and record are written here)
    dir: Path
    execution: Execution = field(default_factory=Execution)
    resolved: dict = field(default_factory=dict)  # what the runner worked out (steps in iterations), for spec.json
    scheduler: "lifeline.Scheduler | None" = None  # the snakemake this job belongs to, if any

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

    def log(self, line: str) -> None:
        print(line, flush=True)


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


def load(manifest: Path, execution: Execution) -> StageJob:
    """The job a manifest describes, after checking that it is intact and that the code
    reading it hashes the stage to the same ID (same kind, same code version)."""
    try:
        data = json.loads(Path(manifest).read_text())
        kind = registry.get(data["kind"])
        spec = {key: data[key] for key in ("kind", "id", "version", "level", "settings", "upstream")}
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
    expected = stage_id(spec["kind"], spec["settings"], spec["upstream"], config_mod.defaults(), kind.version)
    if expected != spec["id"]:
        raise ArtifactError(f"manifest {manifest} does not hash to its ID {spec['id']} (it gives {expected}): "
                            "altered, or written by other code; delete it and run snakemake again")
    return StageJob(spec, inputs, {name: outputs[name] for name in kind.outputs}, stage_dir, execution)


def run(manifest: Path, execution: Execution) -> None:
    job = load(manifest, execution)
    kind = registry.get(job.spec["kind"])
    # one writer per stage, for as long as this process lives (lth.runtime.lifeline)
    _lock = lifeline.StageLock(job.dir.parent.parent / ".lth" / "locks" / f"{job.spec['id']}.lock", job.dir)
    job.scheduler = lifeline.Scheduler.find()
    records.verify(job.inputs.values())
    job.dir.mkdir(parents=True, exist_ok=True)
    try:
        figures = kind.runner_function()(job) or {}
    except Diverged as exc:  # name the stage; nothing of it is written
        raise Diverged(f"{kind.name} {job.dir}: {exc}") from None
    missing = [name for name, path in job.outputs.items() if not path.is_file()]
    if missing:
        raise ArtifactError(f"stage {job.dir}: the {kind.name} runner did not write {', '.join(missing)}")
    write_json(job.dir / registry.SPEC, {**job.spec, "resolved": job.resolved} if job.resolved else job.spec)
    records.write(job.dir, job.spec, {n: f for n, f in kind.files.items() if n != "record"}, figures)


def main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m lth run", description="run one workflow stage")
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--data-dir")
    parser.add_argument("--checkpoint-every", default="2000it")
    parser.add_argument("--deterministic", action="store_true")
    parser.add_argument("--divergence-factor", type=float, default=10.0)
    parser.add_argument("--gpu-slots", type=int, default=1)
    args = parser.parse_args(argv)
    run(args.manifest, Execution(args.threads, args.device, args.data_dir or None, args.checkpoint_every,
                                 args.deterministic, args.divergence_factor, args.gpu_slots))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
