"""`python -m lth catalog [results] [--out FILE]`: one Parquet table with a row per finished
stage of a results folder, built from the stage records and specs alone (no config needed),
to slice many runs at once in pandas or DuckDB.

Columns: kind, id, version, level, lottery (the lottery settings the stage depends on, as
the plan recorded them in its spec, as one label: a dense training shared by several pruning
rates names no rate; "all" where none), variant (what the plan made
the stage for: ticket, random_reinit, random_prune, small_dense, a perturbation's name or
instability_copy, for trainings and the controls' own stages; else empty), one column per
consumed setting ("train.lr", "prune.rate", extras such as "seed" or "at"), and every lottery
setting the stage depends on under the same names (a training has "init.seed" and
"prune.rate" too, so filtering on any setting finds all its stages), upstream (JSON),
the record's key figures (trainings: weights remaining, early stop, final accuracies;
prunes: weights kept) and path. Stages without an intact record are left out and counted
on stderr; stages whose spec predates variant and lottery (written before the plan recorded
them) have them empty. Torch-free.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from lth.plan.registry import SPEC
from lth.store import records
from lth.store.artifacts import ArtifactError, read_json
from lth.store.verify import stage_dirs


def _flatten(settings: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else value
    return out


# Expandable keys added after labels were first written (2026-12-07): named only off their
# defaults, so the labels of every lottery that does not use them stay what they were.
QUIET_AT_DEFAULT = {"init.std_scale": (1, 1.0), "train.warmup": ("0it", "0ep", 0)}


def lottery_label(lottery: dict | None) -> str:
    """The lottery's list-expandable settings (lth.plan.ids.EXPANDABLE), sorted: "all" when none."""
    from lth.plan.ids import EXPANDABLE
    keys = {f"{section}.{key}" for section, key in EXPANDABLE}
    return " ".join(f"{k}={v}" for k, v in sorted((lottery or {}).items())
                    if k in keys and v is not None and v not in QUIET_AT_DEFAULT.get(k, ())) or "all"


def rows(results: Path) -> tuple[list[dict], int]:
    out, skipped = [], 0
    for stage_dir in stage_dirs(results):
        if records.problems(stage_dir):  # damaged or unfinished: its settings cannot be trusted
            skipped += 1
            continue
        record, spec = records.read(stage_dir), read_json(stage_dir / SPEC)
        out.append({"kind": spec["kind"], "id": spec["id"], "version": spec.get("version"), "level": spec.get("level"),
                    "lottery": lottery_label(spec.get("lottery")), "variant": spec.get("variant"),
                    **spec.get("lottery", {}), **_flatten(spec["settings"]),
                    **_flatten(spec.get("resolved", {}), "resolved."),
                    "upstream": json.dumps(spec["upstream"], sort_keys=True), **record.get("figures", {}),
                    "path": str(stage_dir)})
    return out, skipped


def write(results: Path, out: Path | None = None) -> Path:
    import pandas as pd

    from lth.store.artifacts import atomic_path
    results = Path(results)
    if not results.is_dir():
        raise ArtifactError(f"{results} is not a results folder; give the folder snakemake wrote (results by default)")
    found, skipped = rows(results)
    if skipped:
        print(f"catalog: {skipped} stage folders without an intact record left out "
              f"(see python -m lth verify {shlex.quote(str(results))})", file=sys.stderr)
    frame = pd.DataFrame(found)
    for column in frame.columns:
        present = [row[column] for row in found if row.get(column) is not None]
        if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            frame[column] = frame[column].astype("Int64")  # integers stay integers where some rows lack them
        elif frame[column].dtype == object and frame[column].dropna().map(type).nunique() > 1:
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))  # a word here, a number there
    out = Path(out) if out else results / "catalog.parquet"
    with atomic_path(out) as tmp:
        frame.to_parquet(tmp, index=False)
    return out
