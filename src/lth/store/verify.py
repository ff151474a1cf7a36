"""`python -m lth verify [results] [--repair]`: check every stage directory of a results
folder against its record (lth.store.records), list the damaged ones, and with --repair remove
them, so that the next `snakemake` rebuilds exactly those and what depends on them.

A stage is damaged when its record is missing (unfinished or killed), unreadable or
altered, when one of its files is missing or differs from the record in size or sha256, or
when it is a rewind whose start reference (start.json) names a file its stage's record now
says is other bytes (the named stage was rebuilt differently: the reference is stale).
Torch-free.
"""
from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from lth.plan.ids import layout_of
from lth.store import records
from lth.plan import registry
from lth.store.artifacts import ArtifactError, read_json


def stage_dirs(results: Path) -> list[Path]:
    """Every stage directory under a results folder, for every registered kind."""
    out = []
    for kind in registry.kinds():
        folder = Path(results) / kind.name
        if folder.is_dir():
            out += sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    return out


def damaged(results: Path) -> dict[Path, list[str]]:
    found = {}
    for stage_dir in stage_dirs(results):
        problems = records.problems(stage_dir)
        if not problems and (stage_dir / "start.json").is_file():
            from lth.store.starts import reference_problems
            try:
                problems = reference_problems(stage_dir / "start.json")
            except ArtifactError as exc:
                problems = [str(exc)]
        if problems:
            found[stage_dir] = problems
    return found


def _snakemake_running(results: Path) -> bool:
    """A snakemake working here holds locks in .snakemake/locks of its working directory."""
    for workdir in {Path.cwd(), Path(results).resolve().parent}:
        locks = workdir / ".snakemake" / "locks"
        if locks.is_dir() and any(locks.iterdir()):
            return True
    return False


def main(results: Path, repair: bool) -> int:
    if not Path(results).is_dir():
        print(f"error: {results} is not a results folder (a directory with <kind>/<ID>/ stage folders)",
              file=sys.stderr)
        return 2
    checked = len(stage_dirs(results))
    found = damaged(results)
    for stage_dir, problems in found.items():
        print(f"damaged: {stage_dir}: {'; '.join(problems)}")
    if not found:
        print(f"{checked} stages checked in {results}: all intact")
        return 0
    if not repair:
        print(f"{checked} stages checked in {results}: {len(found)} damaged; remove them with "
              f"`python -m lth verify {shlex.quote(str(results))} --repair`, then run snakemake to rebuild them")
        return 1
    if _snakemake_running(results):
        print("error: a snakemake holds locks here (.snakemake/locks): it may be writing these stages; "
              "let it finish (or `snakemake --unlock` after a crash) and repair again", file=sys.stderr)
        return 2
    for stage_dir in found:
        shutil.rmtree(stage_dir)
    print(f"{checked} stages checked in {results}: removed {len(found)} damaged; run snakemake to rebuild "
          "them and what depends on them")
    return 0


def summary_problems(summary_dir: Path) -> list[str]:
    """What is wrong with a summary table or the training files it was built from."""
    summary_dir = Path(summary_dir)
    problems = [f"{summary_dir}: {p}" for p in records.problems(summary_dir)]
    if problems:
        return problems
    root = summary_dir.parent.parent
    spec = read_json(summary_dir / registry.SPEC)
    trains = {tid for run in layout_of(spec)["runs"] for key, ids in run.items()
              if isinstance(ids, list) for tid in ids if tid}
    outputs = registry.get("train").outputs
    for tid in sorted(trains):
        stage_dir = root / "train" / tid
        problems += [f"{stage_dir}: {p}" for p in records.problems(stage_dir, {outputs["metrics"], outputs["stats"]})]
    return problems
