"""`python -m lth catalog [results] [--out FILE]`: one Parquet table with a row per finished
stage of a results folder, built from the stage records and specs alone (no config needed),
to slice many runs at once in pandas or DuckDB.

Columns: kind, id, version, level, lottery (the list-valued settings found in the stage's
own settings and everything upstream of it: a dense training shared by several lotteries
names only what it depends on; a snapshot's point counts as rewind.to), variant (what a
training is: ticket, random_reinit, random_prune, small_dense, a perturbation's name
("perturbation" where no summary names it), or instability_copy; for a control's own start
or mask stage, its control; else empty), one
column per consumed setting ("train.lr", "prune.rate",
extras such as "seed" or "at"), upstream (JSON), the record's key figures (trainings:
weights remaining, early stop, final accuracies; prunes: weights kept) and path. Stages
without an intact record are left out and counted on stderr. Torch-free.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from lth.store import records
from lth.store.artifacts import ArtifactError, read_json
from lth.plan.registry import SPEC
from lth.plan.ids import EXPANDABLE
from lth.store.verify import stage_dirs

LOTTERY_KEYS = [f"{section}.{key}" for section, key in EXPANDABLE]


def _flatten(settings: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else value
    return out


def _upstream_ids(upstream) -> list[str]:
    """Every stage ID an upstream mapping names (nested lists and mappings of IDs)."""
    if isinstance(upstream, str):
        return [upstream]
    if isinstance(upstream, dict):
        return [i for value in upstream.values() for i in _upstream_ids(value)]
    if isinstance(upstream, list):
        return [i for value in upstream for i in _upstream_ids(value)]
    return []


def rows(results: Path) -> tuple[list[dict], int]:
    stages, skipped = {}, 0
    for stage_dir in stage_dirs(results):
        if records.problems(stage_dir):  # damaged or unfinished: its settings cannot be trusted
            skipped += 1
            continue
        record, spec = records.read(stage_dir), read_json(stage_dir / SPEC)
        stages[spec["id"]] = (stage_dir, record, spec)

    lottery_of: dict = {}

    def lottery(sid: str) -> dict:
        """The list-valued settings this stage depends on, through its upstream stages."""
        if sid not in lottery_of:
            lottery_of[sid] = {}
            _, _, spec = stages[sid]
            found = {k: v for k, v in _flatten(spec["settings"]).items() if k in LOTTERY_KEYS}
            if spec["kind"] == "snapshot":  # theta_k: the rewind point of the lotteries that use it
                found["rewind.to"] = spec["settings"]["at"]
            if spec["kind"] not in ("summary", "correlation", "instability", "classes"):  # all lotteries
                for up in _upstream_ids(spec["upstream"]):
                    if up in stages:
                        found = {**lottery(up), **found}
            lottery_of[sid] = found
        return lottery_of[sid]

    variant = variants(stages)
    out = []
    for sid, (stage_dir, record, spec) in stages.items():
        label = " ".join(f"{k}={v}" for k, v in sorted(lottery(sid).items()))
        out.append({"kind": spec["kind"], "id": sid, "version": spec.get("version"), "level": spec.get("level"),
                    "lottery": label or "all", "variant": variant.get(sid), **_flatten(spec["settings"]),
                    **_flatten(spec.get("resolved", {}), "resolved."),
                    "upstream": json.dumps(spec["upstream"], sort_keys=True), **record.get("figures", {}),
                    "path": str(stage_dir)})
    return out, skipped


# the kind of a training's start (or of its rewind's mask) -> the variant it makes
_BY_START = {"reinit": "random_reinit", "smalldense": "small_dense", "randmask": "random_prune",
             "perturb": "perturbation", "snapshot": "instability_copy"}


def variants(stages: dict) -> dict:
    """stage ID -> variant, for trainings and the controls' own stages. The analyses'
    specs say it where they ran (the summary lists each lottery's tickets and controls by
    name, an interpolation its two copies); otherwise a training's start tells."""
    out = {}
    for sid, (_, _, spec) in stages.items():
        if spec["kind"] in _BY_START and spec["kind"] != "snapshot":
            out[sid] = _BY_START[spec["kind"]]
        if spec["kind"] != "train":
            continue
        start = stages.get(spec["upstream"].get("start"))
        kind = start[2]["kind"] if start else None
        if kind == "rewind":
            mask = stages.get(start[2]["upstream"].get("mask"))
            kind = mask[2]["kind"] if mask else None
        out[sid] = _BY_START.get(kind, "ticket" if kind in ("init", "prune") else None)
    for _, _, spec in stages.values():
        if spec["kind"] == "summary":
            for run in spec["upstream"]["runs"]:
                for name, ids in run.items():
                    if isinstance(ids, list):
                        out.update({tid: "ticket" if name == "trains" else name for tid in ids if tid})
        elif spec["kind"] == "interpolate":
            out.update({spec["upstream"][c]: "instability_copy" for c in ("a", "b")})
    return out


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
