"""What a run reuses, checked cheaply before any job. When a stage is recorded, the size and
modification time of each of its files (record.json included) are kept beside it, outside
the stage directory (<results>/.lth/stats/<kind>/<id>.json). Before a run, every finished
stage of the plan is stat-ed: one whose files all still have the kept size and time is
reused as is; any other is hashed against its record, and either its stat is kept anew (a
`touch`, a copy: the same bytes) or it is damaged and the run stops, naming it. Bit rot
that keeps size and time is only seen by hashing everything: `verify: full`, or
`python -m lth verify`. A missing file is not damage here when it is one of the kind's
declared files: snakemake reruns a stage whose output is missing (its spec.json and
record.json included). A recorded file snakemake does not know of (a training's
telemetry.parquet: lth.runtime.job's `extra`) is damage when missing. Torch-free.
"""
from __future__ import annotations

import json
from pathlib import Path

from lth.plan.registry import RECORD
from lth.store import records
from lth.store.artifacts import write_json

STATS = ".lth/stats"


def _kept_path(stage_dir: Path) -> Path:
    stage_dir = Path(stage_dir)
    return stage_dir.parent.parent / STATS / stage_dir.parent.name / f"{stage_dir.name}.json"


def _stat(path: Path) -> list | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def remember(stage_dir) -> None:
    """Keep the stat of every file the stage's record names, and of the record itself."""
    stage_dir = Path(stage_dir)
    names = [entry["file"] for entry in records.read(stage_dir)["files"].values()] + [RECORD]
    write_json(_kept_path(stage_dir), {name: _stat(stage_dir / name) for name in names})


def settle(stage_dirs, since: float) -> int:
    """After a run: snakemake touches every output once its job has finished (to make it
    newer than its inputs), so the stat a job kept is stale by that touch. For the stages
    whose stat was kept during this run (since `since`, a time.time()), keep the touched
    times, the sizes unchanged (no hashing: the job hashed the bytes moments before).
    Returns how many were settled."""
    settled = 0
    for stage_dir in map(Path, stage_dirs):
        path = _kept_path(stage_dir)
        try:
            if path.stat().st_mtime < since:
                continue
            kept = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        now = {name: _stat(stage_dir / name) for name in kept}
        if now != kept and all(now[n] is not None and kept[n] is not None and now[n][0] == kept[n][0] for n in kept):
            write_json(path, now)
            settled += 1
    return settled


def unchanged(stage_dir: Path) -> bool:
    """Whether every file of a finished stage still has the size and time kept for it."""
    try:
        kept = json.loads(_kept_path(stage_dir).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(kept, dict) and RECORD in kept and \
        all(_stat(stage_dir / name) == value for name, value in kept.items())


def _declared(kind: str) -> set | None:
    """The file names snakemake knows as a kind's outputs (None for an unknown kind: any)."""
    from lth.plan import registry
    try:
        return set(registry.get(kind).files.values())
    except KeyError:
        return None


def check(stage_dirs, full: bool = False) -> dict[Path, list[str]]:
    """{stage directory: its problems} of the finished stages (those with a record.json)
    among `stage_dirs` whose files changed since they were recorded (all of them: `full`).
    The unchanged ones cost a stat per file; the intact changed ones are remembered anew."""
    damaged = {}
    for stage_dir in map(Path, stage_dirs):
        if not (stage_dir / RECORD).exists() or (not full and unchanged(stage_dir)):
            continue  # unfinished stages are rerun by snakemake anyway
        found = records.problems(stage_dir)
        rerun = _declared(stage_dir.parent.name)  # missing: snakemake reruns the stage itself
        present = [problem for problem in found if not problem.endswith(" is missing")
                   or (rerun is not None and problem.removesuffix(" is missing") not in rerun)]
        if present:
            damaged[stage_dir] = present
        elif not found:
            remember(stage_dir)
    return damaged


def message(damaged: dict, root) -> str:
    """One line naming the damaged stages (the first five; each with its first problem) and the fix."""
    import shlex
    named = "; ".join(f"{stage} ({problems[0]})" for stage, problems in list(damaged.items())[:5])
    more = f"; and {len(damaged) - 5} more" if len(damaged) > 5 else ""
    many = len(damaged) > 1
    return (f"error: {len(damaged)} finished stage{'s no longer match their records' if many else ' no longer matches its record'}: "
            f"{named}{more}; run `python -m lth verify {shlex.quote(str(root))} --repair`, then "
            "snakemake again (it rebuilds them and what depends on them)")
