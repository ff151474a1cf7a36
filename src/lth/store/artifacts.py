"""Writing and reading stage artifacts: atomic writes, spec.json, clear errors for corrupt files."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


class ArtifactError(RuntimeError):
    """An input artifact is missing, truncated or inconsistent; the message says how to recover."""


def corrupt(path, reason: str) -> ArtifactError:
    stage_dir = Path(path).parent
    return ArtifactError(f"corrupt artifact {path}: {reason}; delete {stage_dir} and rerun the workflow "
                         f"to rebuild it")


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds,
    so a killed job never leaves a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_table(path, what: str, columns=()):
    """A Parquet table as a DataFrame, with a clear error when it is unreadable or lacks
    one of `columns`; `what` names it in the message ("metrics table")."""
    import pandas as pd
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:
        raise corrupt(path, f"not a readable {what} ({type(exc).__name__})") from None
    missing = set(columns) - set(frame.columns)
    if missing:
        raise corrupt(path, f"{what} lacks columns {sorted(missing)}")
    return frame


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"missing artifact {path}; rerun the workflow to rebuild it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise corrupt(path, f"not valid JSON ({exc})") from None
