"""Verified artifacts: every stage's record (sha256 and size of each file), damage detected
by `lth verify`, by the consumers and by `lth summary`, and healed by `verify --repair` plus
a plain rerun, which rebuilds the originals byte for byte."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DAMAGES, damage as spoil, jobs, one_stage, replace_same_shape, run, snakemake, tiny_config

from lth.store import records


def lth(workdir, *args):
    return subprocess.run([sys.executable, "-m", "lth", *map(str, args)], cwd=workdir, capture_output=True, text=True)


# ---- one stage directory, every file kind, every damage (no Snakemake) ----

@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("name", ["weights.pt", "mask.parquet", "stats.json", "spec.json", "record.json"])
def test_every_damage_of_every_file_kind_is_detected(tmp_path, name, damage):
    stage = one_stage(tmp_path)
    assert records.problems(stage) == []
    spoil(stage, name, damage)
    found = records.problems(stage)
    assert found, f"{damage} of {name} went unnoticed"
    proc = lth(tmp_path, "verify", "results")
    assert proc.returncode == 1 and f"damaged: results/train/{stage.name}" in proc.stdout, proc.stdout + proc.stderr
    target = stage / ("stats.json" if name == "record.json" else name)
    with pytest.raises(records.ArtifactError, match=f"damaged stage .*{stage.name}: .*lth verify .* --repair"):
        records.verify([target])


def test_a_job_hashes_each_unchanged_input_once(tmp_path, monkeypatch):
    """A training verifies its inputs, then load_start the files its start names: the same
    bytes are not hashed twice in one process, and a file changed since is hashed again."""
    stage = one_stage(tmp_path)
    hashed = []
    digest = records.file_digest
    monkeypatch.setattr(records, "file_digest", lambda path: hashed.append(Path(path).name) or digest(path))
    records.verify([stage / "weights.pt", stage / "stats.json"])
    records.verify([stage / "weights.pt"])
    assert sorted(hashed) == ["stats.json", "weights.pt"]
    DAMAGES["replace"](stage / "weights.pt")
    with pytest.raises(records.ArtifactError, match="weights.pt differs from its record"):
        records.verify([stage / "weights.pt"])
    assert sorted(hashed) == ["stats.json", "weights.pt", "weights.pt"]


def test_a_file_not_in_its_record_is_refused(tmp_path):
    stage = one_stage(tmp_path)
    (stage / "extra.parquet").write_bytes(b"x")
    with pytest.raises(records.ArtifactError, match="extra.parquet is not in its record.json"):
        records.verify([stage / "extra.parquet"])


# ---- a real workflow: consumers refuse, verify --repair and a rerun heal ----

def _snapshot(results: Path) -> dict:
    """Every file's bytes, less what legitimately differs between two runs: timings in
    stats.json (and so the record that hashes it), and the manifests' folder."""
    out = {}
    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results)
        if not path.is_file() or rel.parts[0] in (".lth", "logs", "catalog.parquet") or path.name == "record.json":
            continue
        data = path.read_bytes()
        if path.name == "stats.json":
            stats = json.loads(data)
            data = json.dumps({k: v for k, v in stats.items() if not k.endswith("_seconds")}).encode()
        out[str(rel)] = data
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_idx_dataset):
    directory = tmp_path_factory.mktemp("verify")
    counts = run(directory, tiny_config(small_idx_dataset, levels=1))
    assert counts == {"init": 1, "train": 2, "prune": 1, "rewind": 1, "summary": 1, "correlation": 1, "anatomy": 1}
    return directory


def _stage_dir(workdir, kind, level=None) -> Path:
    from lth.plan import config, build as plan
    p = plan.build(config.load(workdir / "config.yaml"))
    if kind in ("summary", "correlation"):
        return workdir / p.final(kind).dir
    if kind == "anatomy":
        return workdir / p.anatomy[0].dir
    if kind == "init":
        return workdir / p.stages[p.levels[0]["train"].upstream["start"]].dir
    return workdir / p.levels[level][kind].dir


@pytest.mark.slow
def test_damage_everywhere_is_listed_repaired_and_rebuilt_byte_for_byte(tmp_path, finished):
    workdir = tmp_path / "wf"
    shutil.copytree(finished, workdir, symlinks=True)
    original = _snapshot(workdir / "results")
    damage = {  # one stage of each kind, a different damage and file kind each
        ("init", None): ("model.json", "truncate"), ("train", 0): ("weights.pt", "bitflip"),
        ("prune", 1): ("mask.parquet", "replace"), ("rewind", 1): ("start.json", "delete"),
        ("train", 1): ("metrics.parquet", "bitflip"), ("summary", None): ("spec.json", "delete"),
        ("correlation", None): ("record.json", "bitflip"), ("anatomy", None): ("anatomy.parquet", "truncate"),
    }
    damaged = set()
    for (kind, level), (name, how) in damage.items():
        stage = _stage_dir(workdir, kind, level)
        path = stage / name
        before = path.stat().st_mtime_ns
        DAMAGES[how](path)
        if path.exists():  # keep the mtime: Snakemake alone would see nothing to do
            os.utime(path, ns=(before, before))
        damaged.add(str(stage.relative_to(workdir)))
    proc = lth(workdir, "verify", "results")
    listed = {line.split(": ")[1] for line in proc.stdout.splitlines() if line.startswith("damaged: ")}
    assert proc.returncode == 1 and listed == damaged, proc.stdout
    summary = lth(workdir, "summary")
    assert summary.returncode == 2 and "built from damaged stages" in summary.stderr, summary.stderr
    assert "Traceback" not in summary.stderr and len(summary.stderr.strip().splitlines()) == 1

    repaired = lth(workdir, "verify", "results", "--repair")
    assert repaired.returncode == 0 and f"removed {len(damage)} damaged" in repaired.stdout, repaired.stdout
    assert not any((workdir / d).exists() for d in damaged)
    counts = jobs(snakemake(workdir))
    assert counts == {"init": 1, "train": 2, "prune": 1, "rewind": 1, "summary": 1, "correlation": 1, "anatomy": 1}
    assert lth(workdir, "verify", "results").returncode == 0
    assert _snapshot(workdir / "results") == original


@pytest.mark.slow
def test_a_consumer_refuses_a_damaged_input_in_one_line(tmp_path, finished):
    workdir = tmp_path / "wf"
    shutil.copytree(finished, workdir, symlinks=True)
    prune = _stage_dir(workdir, "prune", 1)
    mask = prune / "mask.parquet"
    st = mask.stat()
    from lth.store import freshness
    # the run settled the stats snakemake's touch left: a rerun hashes nothing of a finished folder
    assert all(freshness.unchanged(d) for d in (workdir / "results").glob("*/????????????"))
    DAMAGES["bitflip"](mask)  # bit rot: same size, and the time put back, so the stat check sees nothing
    os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns))
    (_stage_dir(workdir, "rewind", 1) / "record.json").unlink()  # the consumer reruns and reads the mask
    proc = snakemake(workdir, check=False)
    assert proc.returncode != 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = next((workdir / "results" / "logs" / "rewind").glob("*.attempt.log")).read_text()
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) == 1 and re.fullmatch(
        f"error: damaged stage {prune.relative_to(workdir)}: mask.parquet (has .* bytes, its record says .*|differs "
        r"from its record \(sha256\)); run `python -m lth verify results --repair`, then snakemake again to rebuild it",
        lines[0]), log + proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_a_missing_spec_or_record_reruns_its_stage(tmp_path, finished):
    workdir = tmp_path / "wf"
    shutil.copytree(finished, workdir, symlinks=True)
    train1 = _stage_dir(workdir, "train", 1)
    (train1 / "spec.json").unlink()
    counts = jobs(snakemake(workdir))
    assert counts["train"] == 1 and "init" not in counts and "prune" not in counts
    assert (train1 / "spec.json").exists()
    (train1 / "record.json").unlink()
    counts = jobs(snakemake(workdir))
    assert counts["train"] == 1 and "init" not in counts and "prune" not in counts
    assert records.problems(train1) == []


@pytest.mark.slow
def test_catalog_has_a_row_per_stage_from_the_records_alone(tmp_path, finished):
    import pandas as pd
    workdir = tmp_path / "wf"
    shutil.copytree(finished, workdir, symlinks=True)
    (workdir / "config.yaml").unlink()  # the catalog needs no config
    proc = lth(workdir, "catalog", "results", "--out", "cat.parquet")
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_parquet(workdir / "cat.parquet")
    assert sorted(frame.kind) == sorted(["init", "train", "train", "prune", "rewind", "summary", "correlation",
                                         "anatomy"])
    trains = frame[frame.kind == "train"].sort_values("level")
    assert trains["train.lr"].tolist() == [0.0012, 0.0012] and trains["train.iterations"].tolist() == ["20it"] * 2
    assert trains.weights_remaining_pct.round(1).tolist() == [100.0, 80.0]
    assert trains.final_test_accuracy.between(0, 1).all()
    assert trains.lottery.tolist()[0] == "init.seed=0 train.lr=0.0012 train.seed=0"  # the dense run: no pruning key
    assert "prune.rate=0.2" in trains.lottery.tolist()[1]
    assert trains.variant.tolist() == ["ticket", "ticket"] and frame["train.seed"].dtype == "Int64"
    # every stage carries the lottery settings it depends on: filtering by one finds them all
    assert (frame["init.seed"] == 0).all()  # the analyses too: the one lottery they read
    assert trains["init.seed"].tolist() == [0, 0] and trains["prune.rate"].isna().tolist() == [True, False]
    prune = frame[frame.kind == "prune"].iloc[0]
    assert prune["prune.rate"] == 0.2 and json.loads(prune.upstream) == {"trained": trains.id.tolist()[0]}
    assert all((workdir / path).is_dir() for path in frame.path)
    spec = workdir / prune.path / "spec.json"  # a hand-edited spec: its row cannot be trusted
    spec.write_text(spec.read_text().replace('"rate": 0.2', '"rate": 0.3'))
    proc = lth(workdir, "catalog", "results", "--out", "cat.parquet")
    assert proc.returncode == 0 and "1 stage folders without an intact record left out" in proc.stderr
    assert len(pd.read_parquet(workdir / "cat.parquet")) == len(frame) - 1


@pytest.mark.slow
def test_every_damage_of_every_file_kind_is_healed_by_repair_and_a_rerun(tmp_path, small_idx_dataset):
    """All 20 (file kind x damage) cases at once, each in its own stage of a real workflow
    (mtimes kept: Snakemake alone sees nothing); verify lists exactly those stages, --repair
    removes them, and one plain rerun rebuilds every artifact byte for byte."""
    from lth.plan import config, build as plan
    cfg = tiny_config(small_idx_dataset, levels=3, controls={"random_reinit": True, "random_prune": True})
    run(tmp_path, cfg)
    original = _snapshot(tmp_path / "results")
    p = plan.build(config.validate(cfg))
    by_kind = {}
    for stage in sorted(p.stages.values(), key=lambda s: (s.level or 0, s.id)):
        by_kind.setdefault(stage.kind, []).append(tmp_path / stage.dir)
    pools = {"weights.pt": by_kind["train"][:4], "stats.json": by_kind["train"][4:8],
             "mask.parquet": (by_kind["prune"] + by_kind["randmask"])[:4],
             "spec.json": (by_kind["rewind"] + by_kind["reinit"])[:4],
             "record.json": by_kind["reinit"][1:] + by_kind["randmask"][2:] + [by_kind["train"][8]]}
    damaged = set()
    for name, stages in pools.items():
        for how, stage in zip(sorted(DAMAGES), stages, strict=True):
            path = stage / name
            before = path.stat().st_mtime_ns
            if name == "record.json" and how == "replace":
                record = json.loads(path.read_text())
                record["figures"] = {**record.get("figures", {}), "edited": 1}  # a hand edit
                path.write_text(json.dumps(record))
            else:
                DAMAGES[how](path)
            if path.exists():
                os.utime(path, ns=(before, before))
            damaged.add(str(stage.relative_to(tmp_path)))
    assert len(damaged) == 20
    proc = lth(tmp_path, "verify", "results")
    listed = {line.split(": ")[1] for line in proc.stdout.splitlines() if line.startswith("damaged: ")}
    assert proc.returncode == 1 and listed == damaged, proc.stdout
    assert lth(tmp_path, "verify", "results", "--repair").returncode == 0
    snakemake(tmp_path)
    assert lth(tmp_path, "verify", "results").returncode == 0
    assert _snapshot(tmp_path / "results") == original


@pytest.mark.slow
def test_a_plain_rerun_notices_damage_it_would_reuse(tmp_path, finished):
    """Without `lth verify`: a damaged spec.json or record.json of a training, or any damaged
    leaf analysis file, stops the next plain `snakemake` before any job, in one line naming
    the stage and the fix (a stat check; the changed stage is hashed)."""
    cases = [("train", 0, "spec.json", "truncate"), ("train", 1, "record.json", "bitflip"),
             ("summary", None, "summary.csv", "bitflip"), ("summary", None, "verdict.txt", "truncate"),
             ("correlation", None, "correlation.parquet", "replace_bytes"),
             ("anatomy", None, "anatomy.parquet", "truncate"), ("prune", 1, "mask.parquet", "bitflip")]
    damage = {**DAMAGES, "replace_bytes": lambda p: p.write_bytes(p.read_bytes()[::-1])}
    workdir = tmp_path / "damaged"  # every case at once: one snakemake names them all
    shutil.copytree(finished, workdir, symlinks=True)
    stages = []
    for kind, level, name, how in cases:
        stages.append(_stage_dir(workdir, kind, level))
        damage[how](stages[-1] / name)
    proc = snakemake(workdir, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and jobs(proc) == {}, out[-1500:]
    line = next(l for l in out.splitlines() if l.startswith("error: "))
    stages = sorted(set(stages))  # the summary has two damaged files
    assert line.startswith(f"error: {len(stages)} finished stages no longer match their records: ") and \
        line.endswith(f"; and {len(stages) - 5} more; run `python -m lth verify results --repair`, then snakemake "
                      "again (it rebuilds them and what depends on them)"), line
    from lth.store import freshness
    assert sorted(freshness.check(stages)) == stages  # every one, each with its damage
    assert sum(f"{stage.relative_to(workdir)} (" in line for stage in stages) == 5
    # a touched file (same bytes, new time) is hashed once and reused; `verify=full` hashes all
    workdir = tmp_path / "touched"
    shutil.copytree(finished, workdir, symlinks=True)
    os.utime(_stage_dir(workdir, "summary") / "summary.csv")
    assert jobs(snakemake(workdir)) == {}
    assert jobs(snakemake(workdir, "--config", "verify=full")) == {}
