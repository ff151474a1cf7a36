"""The cost of the stat check every run makes of what it reuses (lth.store.freshness), on a
synthetic results folder (prints numbers; asserts nothing).

    python bench/freshness.py [STAGES]     # default 10,000 stages of 4 small files each

Three figures: the check when nothing changed (a stat per file, the common case), after a
`touch` of every stage (each hashed once, then remembered), and `verify: full` (all hashed).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lth.store import freshness, records  # noqa: E402


def make(root: Path, count: int) -> list[Path]:
    dirs = []
    for i in range(count):
        stage = root / "train" / f"{i:012x}"
        stage.mkdir(parents=True)
        (stage / "weights.pt").write_bytes(os.urandom(20_000))
        (stage / "metrics.parquet").write_bytes(os.urandom(3_000))
        (stage / "stats.json").write_text(json.dumps({"level": 1, "iterations": 300}))
        spec = {"kind": "train", "id": stage.name, "version": 1, "level": 1, "settings": {}, "upstream": {}}
        (stage / "spec.json").write_text(json.dumps(spec))
        records.write(stage, spec, {"weights": "weights.pt", "metrics": "metrics.parquet", "stats": "stats.json",
                                    "spec": "spec.json"})
        freshness.remember(stage)
        dirs.append(stage)
    return dirs


def timed(label: str, fn) -> None:
    began = time.perf_counter()
    damaged = fn()
    print(f"{label}: {time.perf_counter() - began:.2f} s ({len(damaged)} damaged)")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        dirs = make(Path(tmp) / "results", count)
        print(f"{count} stages, {5 * count} files")
        timed("unchanged (stat only)", lambda: freshness.check(dirs))
        timed("unchanged, again", lambda: freshness.check(dirs))
        for stage in dirs:
            os.utime(stage / "stats.json")
        timed("every stage touched (hashed once)", lambda: freshness.check(dirs))
        timed("verify: full", lambda: freshness.check(dirs, full=True))
