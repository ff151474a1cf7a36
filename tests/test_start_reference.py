"""A rewind's start is a reference (start.json: the source weights and the mask), not a
second float copy: trainings from it are bit for bit the trainings from the .pt it stands
for, `python -m lth start` materialises exactly that .pt, and damage to what it names stops
a job in one line."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lth.plan import config, build as plan
from lth.runtime import job as jobs
from lth.store import masks, ptfile, records, verify
from lth.plan import execution as how
from lth.stages import train as train_kind
from lth.store import starts
from lth.store import weights as stored
from lth.store.artifacts import ArtifactError


def _cfg(data_dir, results, **overrides):
    raw = {"data_dir": str(data_dir), "results": str(results), "threads": 1, "levels": 1, "device": "cpu",
           "data": {"dataset": "fashion_mnist", "validation_size": 200},
           "train": {"iterations": "20it", "eval_every": "10it", "batch_size": 60}}
    return config.validate(config.merge(raw, overrides))


@pytest.fixture(scope="module")
def level1(tmp_path_factory, small_idx_dataset):
    """init, the dense training, level 1's prune and rewind, run as the workflow's jobs."""
    import torch
    results = tmp_path_factory.mktemp("start") / "results"
    cfg = _cfg(small_idx_dataset, results)
    p = plan.build(cfg)
    jobs.write_manifests(p.stages.values(), cfg["results"])
    execution = how.Execution(threads=1, device="cpu", data_dir=str(small_idx_dataset))
    threads = torch.get_num_threads()
    try:
        init = p.stages[p.levels[0]["train"].upstream["start"]]
        for stage in (init, p.levels[0]["train"], p.levels[1]["prune"], p.levels[1]["rewind"]):
            jobs.run(Path(jobs.manifest_path(cfg["results"], stage.kind, stage.id)), execution)
    finally:
        torch.set_num_threads(threads)
    return p, init, execution


def _old_start_pt(p, init, path: Path) -> Path:
    """What the rewind stage wrote as start.pt before it stored a reference."""
    info = stored.read_model_info(init.output("model"))
    rewind = p.levels[1]["rewind"]
    ptfile.save(path, stored.masked(stored.load_weights(rewind.inputs["init"], info),
                                    stored.load_mask(rewind.inputs["mask"], info)))
    return path


def test_the_rewind_writes_a_small_reference_covered_by_its_record(level1):
    p, init, _ = level1
    rewind = p.levels[1]["rewind"]
    directory = Path(rewind.dir)
    assert sorted(f.name for f in directory.iterdir()) == ["record.json", "spec.json", "start.json"]
    ref = json.loads((directory / "start.json").read_text())
    assert ref["weights"]["file"] == f"init/{init.id}/weights.pt"
    assert ref["mask"]["file"] == f"prune/{p.levels[1]['prune'].id}/mask.parquet"
    assert ref["weights"]["sha256"] == records.file_digest(Path(init.output("weights")))[1]
    assert (directory / "start.json").stat().st_size < 1000
    assert records.problems(directory) == [] and "start.json" in {
        e["file"] for e in records.read(directory)["files"].values()}


def test_training_from_the_reference_equals_training_from_the_materialised_pt(level1, tmp_path):
    import torch
    p, init, execution = level1
    rewind, train = p.levels[1]["rewind"], p.levels[1]["train"]
    # the CLI writes exactly the old start.pt's bytes
    out = tmp_path / "materialised.pt"
    proc = subprocess.run([sys.executable, "-m", "lth", "start", rewind.dir, "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    old = _old_start_pt(p, init, tmp_path / "old.pt")
    assert out.read_bytes() == old.read_bytes()
    mask = masks.read(rewind.inputs["mask"])
    state = ptfile.load(out)
    assert all(not np.signbit(state[n][~keep]).any() and not state[n][~keep].any() for n, keep in mask.items())

    trained = {}
    threads = torch.get_num_threads()
    try:
        for name, start in (("reference", Path(rewind.output("start"))), ("materialised", out)):
            job = jobs.StageJob(train.spec(), {**{k: Path(v) for k, v in train.inputs.items()}, "start": start},
                                {}, tmp_path / name / "train" / train.id, execution)  # own checkpoint folder
            job.dir.mkdir(parents=True)
            train_kind.run(job)
            trained[name] = job.dir
    finally:
        torch.set_num_threads(threads)
    for name in ("weights.pt", "metrics.parquet"):
        assert (trained["reference"] / name).read_bytes() == (trained["materialised"] / name).read_bytes(), name


def test_damage_to_what_a_reference_names_stops_the_job_in_one_line(level1, tmp_path):
    import shutil
    p, init, _ = level1
    results = tmp_path / "results"
    shutil.copytree(p.config["results"], results)
    start = results / "rewind" / p.levels[1]["rewind"].id / "start.json"
    init_dir = results / "init" / init.id
    info = stored.read_model_info(init_dir / "model.json")
    weights, original = init_dir / "weights.pt", (init_dir / "weights.pt").read_bytes()
    intact = starts.load_start(start, info)

    def rerecord():  # as if the init stage had been rebuilt: an intact record of the bytes there now
        records.write(init_dir, json.loads((init_dir / "spec.json").read_text()),
                      {"weights": "weights.pt", "model": "model.json", "spec": "spec.json"})

    flipped = bytearray(original)
    flipped[-200] ^= 1
    weights.write_bytes(bytes(flipped))
    with pytest.raises(ArtifactError) as damaged:
        starts.load_start(start, info)
    message = str(damaged.value)
    assert message.startswith(f"damaged stage {init_dir}: weights.pt differs from its record") and "\n" not in message
    assert set(verify.damaged(results)) == {init_dir}
    rerecord()  # rebuilt differently: the reference is stale, and verify lists the rewind
    with pytest.raises(ArtifactError, match=r"the reference is stale"):
        starts.load_start(start, info)
    assert set(verify.damaged(results)) == {start.parent}
    weights.write_bytes(original)
    rerecord()
    assert verify.damaged(results) == {}
    assert all(np.array_equal(v, intact[k]) for k, v in starts.load_start(start, info).items())
    shutil.rmtree(results / "prune")
    with pytest.raises(ArtifactError, match=r"^damaged stage .*prune.*: no record.json"):
        starts.load_start(start, info)


def test_the_start_command_refuses_a_folder_without_a_start(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lth", "start", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_every_consumer_of_a_reference_declares_the_files_it_names(tmp_path):
    """Snakemake orders and reruns on the referenced files only if they are inputs."""
    cfg = _cfg(tmp_path, tmp_path / "results", levels=2, rewind={"to": ["reset", "7it"]},
               controls={"random_prune": True}, perturb={"kinds": ["shuffle_sign"]},
               instability={"levels": [1], "pairs": 1})
    p = plan.build(cfg)
    rewinds = {s.output("start"): s for s in p.stages.values() if s.kind == "rewind"}
    consumers = 0
    for stage in p.stages.values():
        for start in set(stage.inputs.values()) & set(rewinds):
            named = set(rewinds[start].inputs.values()) - {rewinds[start].inputs["model"]}
            assert named <= set(stage.inputs.values()), (stage.kind, stage.id)
            consumers += 1
    kinds = {s.kind for s in p.stages.values() if set(s.inputs.values()) & set(rewinds)}
    assert kinds == {"train", "perturb", "anatomy", "correlation"} and consumers > 10
