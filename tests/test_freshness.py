"""What a run reuses is checked cheaply: a stat per file while nothing changed, a hash when
something did (lth.store.freshness)."""
import json
import os

import pytest

from conftest import DAMAGES, damage as spoil, one_stage

from lth.store import freshness, records


def _hashing(monkeypatch) -> list:
    hashed = []
    digest = records.file_digest
    monkeypatch.setattr(records, "file_digest", lambda path: hashed.append(path.name) or digest(path))
    return hashed


def test_unchanged_stages_cost_a_stat_and_a_touched_one_a_hash(tmp_path, monkeypatch):
    stage = one_stage(tmp_path)
    freshness.remember(stage)
    hashed = _hashing(monkeypatch)
    assert freshness.check([stage]) == {} and hashed == []
    os.utime(stage / "stats.json")  # the same bytes, a new time: hashed once, then remembered
    assert freshness.check([stage]) == {} and sorted(hashed) == ["mask.parquet", "spec.json", "stats.json",
                                                               "weights.pt"]
    hashed.clear()
    assert freshness.check([stage]) == {} and hashed == []
    assert freshness.check([stage], full=True) == {} and len(hashed) == 4  # verify: full hashes everything


# a deleted file is not damage here: snakemake reruns a stage whose output is missing
@pytest.mark.parametrize("name, damage", [(n, d) for n in ("spec.json", "record.json", "stats.json", "weights.pt")
                                          for d in sorted(DAMAGES) if d != "delete"])
def test_every_damage_is_caught_without_verify(tmp_path, name, damage):
    stage = one_stage(tmp_path)
    freshness.remember(stage)
    spoil(stage, name, damage)
    found = freshness.check([stage])
    assert list(found) == [stage] and found[stage]
    line = freshness.message(found, tmp_path / "results")
    assert "\n" not in line and f"verify {tmp_path / 'results'} --repair" in line and str(stage) in line


def test_bit_rot_that_keeps_size_and_time_is_seen_only_by_a_full_check(tmp_path):
    stage = one_stage(tmp_path)
    freshness.remember(stage)
    path = stage / "weights.pt"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert freshness.check([stage]) == {}
    assert "weights.pt differs from its record (sha256)" in freshness.check([stage], full=True)[stage]


@pytest.mark.parametrize("name", ["spec.json", "record.json", "weights.pt"])
def test_a_missing_file_is_left_to_snakemake_which_reruns_its_stage(tmp_path, name):
    stage = one_stage(tmp_path)
    freshness.remember(stage)
    (stage / name).unlink()
    assert freshness.check([stage]) == {} and freshness.check([stage], full=True) == {}


def test_a_missing_recorded_file_that_snakemake_does_not_know_is_damage(tmp_path):
    """A training's telemetry.parquet is in its record but no Snakemake output: snakemake
    would not rerun the stage for it, so the stat check stops (mask.parquet plays it here:
    a train kind declares no mask)."""
    stage = one_stage(tmp_path)
    freshness.remember(stage)
    (stage / "mask.parquet").unlink()
    assert freshness.check([stage]) == {stage: ["mask.parquet is missing"]}


def test_the_stop_line_names_the_first_five_stages(tmp_path):
    damaged = {tmp_path / "train" / f"{i:012x}": ["stats.json differs from its record (sha256)"] for i in range(7)}
    line = freshness.message(damaged, "results")
    assert line.startswith("error: 7 finished stages no longer match their records: ")
    assert line.count("stats.json differs") == 5 and "; and 2 more; run `python -m lth verify results --repair`" in line


def test_a_stage_without_a_kept_stat_is_hashed_once(tmp_path, monkeypatch):
    stage = one_stage(tmp_path)  # finished before stats were kept
    hashed = _hashing(monkeypatch)
    assert freshness.check([stage]) == {} and len(hashed) == 4
    assert freshness.check([stage]) == {} and len(hashed) == 4
    (stage / "record.json").unlink()  # unfinished: snakemake reruns it, nothing to check
    assert freshness.check([stage]) == {}


def test_settle_keeps_the_times_snakemake_touched_after_the_job_not_other_changes(tmp_path):
    import time
    began = time.time()
    stage = one_stage(tmp_path)
    freshness.remember(stage)  # the job
    os.utime(stage / "weights.pt")  # snakemake touches outputs after the job
    assert not freshness.unchanged(stage)
    assert freshness.settle([stage], since=time.time() + 60) == 0  # kept before this run: left alone
    assert freshness.settle([stage], since=began) == 1 and freshness.unchanged(stage)
    with open(stage / "stats.json", "a") as handle:  # a changed size is never settled: the check hashes it
        handle.write(" ")
    assert freshness.settle([stage], since=began) == 0 and not freshness.unchanged(stage)
    assert "stats.json has" in freshness.check([stage])[stage][0]
