"""Stage records: `record.json`, written last by every stage, holds the sha256 and size of
each of the stage's files (spec.json included) and the stage's key figures. A stage without
a record is unfinished; a file whose bytes differ from its record is damaged.

Consumers verify every input against its stage's record before reading it, so a deleted,
truncated, bit-flipped or replaced artifact stops the job in one line naming the stage and
the fix instead of flowing into a table. The record carries its own digest too, so an edit
of the record is damage as well. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

from lth.plan import canonical
from lth.store.artifacts import ArtifactError, write_json
from lth.plan.registry import RECORD

FORMAT = 1


def file_digest(path: Path) -> tuple[int, str]:
    with open(path, "rb") as handle:
        return Path(path).stat().st_size, hashlib.file_digest(handle, "sha256").hexdigest()


def _self_digest(record: dict) -> str:
    return canonical.digest({k: v for k, v in record.items() if k != "record_sha256"})


def write(stage_dir: Path, spec: dict, files: dict, figures: dict | None = None) -> dict:
    """Record the stage in `stage_dir`: files is output name -> file name (the record
    itself excluded), figures the stage's key numbers for the catalog."""
    entries = {}
    for name, filename in files.items():
        size, sha = file_digest(Path(stage_dir) / filename)
        entries[name] = {"file": filename, "size": size, "sha256": sha}
    record = {"format": FORMAT, "kind": spec["kind"], "id": spec["id"], "version": spec.get("version"),
              "level": spec.get("level"), "files": entries, "figures": figures or {}}
    record["record_sha256"] = _self_digest(record)
    write_json(Path(stage_dir) / RECORD, record)
    return record


def fix_hint(stage_dir) -> str:
    root = Path(stage_dir).parent.parent
    return f"run `python -m lth verify {shlex.quote(str(root))} --repair`, then snakemake again to rebuild it"


def damaged(stage_dir, problem: str) -> ArtifactError:
    return ArtifactError(f"damaged stage {stage_dir}: {problem}; {fix_hint(stage_dir)}")


def _load(stage_dir) -> tuple[dict | None, str | None]:
    """(record, None) when the record is intact, else (None, what is wrong with it)."""
    path = Path(stage_dir) / RECORD
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"no {RECORD} (unfinished, or written by an older version)"
    except (OSError, ValueError) as exc:
        return None, f"{RECORD} is unreadable ({type(exc).__name__})"
    if not isinstance(record, dict) or record.get("record_sha256") != _self_digest(record) \
            or not isinstance(record.get("files"), dict):
        return None, f"{RECORD} was altered (its digest does not match)"
    if record.get("id") != Path(stage_dir).name:
        return None, f"{RECORD} belongs to stage {record.get('id')}"
    return record, None


def read(stage_dir) -> dict:
    """The stage's record, checked against its own digest."""
    record, problem = _load(stage_dir)
    if problem:
        raise damaged(stage_dir, problem)
    return record


def problems(stage_dir, names=None) -> list[str]:
    """What is wrong with a stage directory (empty: intact). names: only these files'
    entries are hashed (None: all of them)."""
    record, problem = _load(stage_dir)
    if problem:
        return [problem]
    out = [f"{name} is not in its {RECORD}" for name in sorted(set(names or ()) -
                                                             {e["file"] for e in record["files"].values()})]
    for entry in record["files"].values():
        if names is not None and entry["file"] not in names:
            continue
        path = Path(stage_dir) / entry["file"]
        if not path.is_file():
            out.append(f"{entry['file']} is missing")
            continue
        size, sha = file_digest(path)
        if size != entry["size"]:
            out.append(f"{entry['file']} has {size} bytes, its record says {entry['size']}")
        elif sha != entry["sha256"]:
            out.append(f"{entry['file']} differs from its record (sha256)")
    return out


# Files this process has verified, by what their stat says: a job reads some twice (a
# training verifies its inputs, then load_start the files its start reference names), and
# hashing a weights file again would check nothing new while it is unchanged.
_verified: set = set()


def _stat_key(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino


def verify(paths) -> None:
    """Check files against their stages' records (each record read once, each unchanged
    file hashed once per process), or raise the one-line error naming the first damaged stage."""
    by_stage: dict = {}
    for path in map(Path, paths):
        if _stat_key(path) not in _verified:
            by_stage.setdefault(path.parent, set()).add(path.name)
    for stage_dir, names in by_stage.items():
        found = problems(stage_dir, names)
        if found:
            raise damaged(stage_dir, "; ".join(found))
        _verified.update(_stat_key(stage_dir / name) for name in names)
