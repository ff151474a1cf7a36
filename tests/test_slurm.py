"""The tiny workflow through a real single-node SLURM on loopback (tests/cluster/start.sh),
with the project's SLURM profile changed only where a test must: partition, status checks
(squeue, 5 s), and CPUs per training job (the node has 2). The first test needs no cluster:
what the profile asks for, job by job, in a dry run."""
import fcntl
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, tiny_config

CLUSTER = ROOT / "tests" / "cluster"
# One test SLURM per machine (fixed ports, /etc/slurm/slurm.conf): a second pytest worker or
# run waits on this lock instead of starting a second controller beside the first (that
# once lost a job). Not xdist_group: pytest-xdist 3.8's loadgroup does not group under
# pytest 9 (it renames nodeids through an attribute pytest no longer reads).
LOCK = Path(tempfile.gettempdir()) / "lth-test-slurm.lock"


def test_every_kind_asks_for_its_resource_class_through_the_profile(tmp_path, small_idx_dataset):
    """Runtime and memory follow each kind's registry class, not a profile entry per rule
    (the landscape, of the training class, used to get 1 CPU, 4 GB and 30 minutes), and
    every training-class kind gets the profile's training threads."""
    from lth.plan import registry
    cfg = tiny_config(small_idx_dataset, levels=1, instability={"levels": [1], "pairs": 1},
                      landscape={"levels": [1], "grid": 3})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n",
                          "--workflow-profile", str(ROOT / "profiles" / "slurm")],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    asked = {}
    for block in re.split(r"\n\s*rule ", out.stdout)[1:]:  # a job: its rule, threads (1 unless shown), resources
        rule, resources = block.split(":", 1)[0], re.search(r"resources: (.*)", block)
        if rule == "all":
            continue
        values = dict(kv.split("=", 1) for kv in resources.group(1).split(", "))
        threads = int(re.search(r"threads: (\d+)", block)[1]) if "threads: " in block else 1
        asked.setdefault(rule, set()).add((threads, values["runtime"], values["mem_mb"]))
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    expected = {"train": ("720", "16000"), "analysis": ("15", "4000"), "small": ("10", "4000")}
    assert {"train", "landscape", "interpolate", "summary", "prune"} <= set(asked)
    for rule, seen in asked.items():
        kind = registry.get(rule)
        runtime, mem = expected[kind.resources]
        runtime = str(profile["set-resources"].get(rule, {}).get("runtime", runtime))
        threads = profile["set-threads"][rule] if kind.resources == "train" else 1
        assert seen == {(threads, runtime, mem)}, rule


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    with open(LOCK, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # released when the file closes: after stop.sh
        started = subprocess.run(["bash", str(CLUSTER / "start.sh"), str(state)], capture_output=True, text=True)
        if started.returncode == 3:
            pytest.skip(started.stderr.strip())
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            yield state
        finally:
            subprocess.run(["bash", str(CLUSTER / "stop.sh"), str(state)], check=False)


def slurm_test_profile(tmp_path) -> Path:
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["slurm_partition"] = "lthtest"
    del profile["default-resources"]["slurm_account"]
    for rule, resources in profile["set-resources"].items():
        if "slurm_partition" in resources:
            resources["slurm_partition"] = "lthtest"
    profile["set-threads"] = {rule: 1 for rule in profile["set-threads"]}
    profile["cores"] = 1  # the node has 2 CPUs: the analyses job runs its stages one by one
    profile["slurm-status-command"] = "squeue"
    profile["slurm-init-seconds-before-status-checks"] = 5
    directory = tmp_path / "profile"
    directory.mkdir()
    (directory / "config.yaml").write_text(yaml.safe_dump(profile))
    # GPUs follow `device`, never the profile (a CPU run through this profile asks for none)
    assert not any("gpu" in r for r in profile["set-resources"].values()) and profile["slurm-requeue"] is True
    return directory


def run_through_slurm(tmp_path, cfg, profile):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
                           "--workflow-profile", str(profile), "--jobs", "4"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    # (sacct needs SLURM accounting, which this test cluster has not: the executor's
    # submission lines and scontrol count and describe the jobs instead)
    submitted = dict(re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+)", output))
    return proc.returncode, output, {sid: show_job(sid) for sid in submitted.values()}


def show_job(sid: str) -> str:
    """`scontrol show job`, asked again for up to 10 s while it prints nothing (a controller
    busy beside another test worker may answer late; it keeps finished jobs an hour,
    MinJobAge); if it never answers, its stderr goes into the failing assertion's text."""
    for _ in range(10):
        shown = subprocess.run(["scontrol", "show", "job", sid], capture_output=True, text=True)
        if shown.stdout.strip():
            return shown.stdout
        time.sleep(1)
    return f"(scontrol show job {sid} printed nothing; stderr: {shown.stderr.strip()!r})"


@pytest.mark.slow
def test_tiny_workflow_runs_through_slurm_in_grouped_jobs(cluster, tmp_path, small_idx_dataset):
    """One instability pair of the dense net, device: cpu. Before grouping this was 12 SLURM
    jobs, one per stage; now level 1's prune and rewind run in its training's job, and the
    final analyses are one job: 7."""
    from lth.plan import config, groups as job_groups, build as plan
    cfg = tiny_config(small_idx_dataset, levels=1, instability={"levels": [0]}, device="cpu")
    code, output, shown = run_through_slurm(tmp_path, cfg, slurm_test_profile(tmp_path))
    assert code == 0, output[-4000:]
    built = plan.build(config.validate(cfg))
    assert len(built.stages) == 12
    assert len(shown) == len(set(job_groups.assign(built).values())) == 7
    assert all("JobState=COMPLETED" in text for text in shown.values()), shown
    assert not any("gpu" in text.split("TresPerJob=")[-1].split()[0] for text in shown.values()
                   if "TresPerJob=" in text), "device: cpu asks SLURM for no GPU"
    train_logs = [p.read_text() for p in (tmp_path / "results" / "logs" / "train").glob("????????????.log")]
    assert len(train_logs) == 4 and all("device cpu" in text for text in train_logs)
    assert list((tmp_path / "results" / "summary").glob("*/summary.csv"))


@pytest.mark.slow
def test_auto_on_a_gpu_node_torch_cannot_use_stops_in_one_line(cluster, tmp_path, small_idx_dataset):
    """device: auto through SLURM asks for a GPU (the submit host has none: it follows
    `device`); on this node torch (a CPU build) cannot use it, so the training stops with
    the one-line fix instead of training on the CPU."""
    cfg = tiny_config(small_idx_dataset, levels=0, instability={"levels": []}, device="auto")
    code, output, shown = run_through_slurm(tmp_path, cfg, slurm_test_profile(tmp_path))
    assert code != 0
    with_gpu = [text for text in shown.values() if "TresPerJob=gres:gpu:1" in text]
    assert len(with_gpu) == 1, shown  # the training's job (init runs in it)
    (log,) = (tmp_path / "results" / "logs" / "train").glob("????????????.log")
    text = log.read_text()
    error = text.strip().splitlines()[-1]
    assert "device: auto: the scheduler allocated a GPU" in error and "torch.version.cuda" in error, error
    assert error.startswith("error: ") and "Traceback" not in text, text[-2000:]
    assert not list((tmp_path / "results" / "train").glob("*/record.json"))
