"""The tiny workflow through a real single-node SLURM on loopback (tests/cluster/start.sh),
with the project's SLURM profile changed only where a test must: partition, status checks
(squeue, 5 s), and CPUs per training job (the node has 2)."""
import collections
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from test_workflow import tiny_config

CLUSTER = ROOT / "tests" / "cluster"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
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
        if "cpus_per_task" in resources:
            resources["cpus_per_task"] = 1
    profile["set-threads"] = {rule: 1 for rule in profile["set-threads"]}
    profile["slurm-status-command"] = "squeue"
    profile["slurm-init-seconds-before-status-checks"] = 5
    directory = tmp_path / "profile"
    directory.mkdir()
    (directory / "config.yaml").write_text(yaml.safe_dump(profile))
    assert profile["set-resources"]["train"]["gpu"] == 1 and profile["slurm-requeue"] is True
    return directory


def test_tiny_workflow_runs_through_slurm_with_gpus_granted(cluster, tmp_path, small_idx_dataset):
    # One instability pair of the dense net: its copies and the interpolation ask for GPUs too.
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        tiny_config(small_idx_dataset, levels=1, instability={"levels": [0]}, device="auto")))
    profile = slurm_test_profile(tmp_path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
                           "--workflow-profile", str(profile), "--jobs", "4"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output))
    # init, 4 trainings (2 levels, 2 copies), prune, rewind, interpolate, instability, summary,
    # correlation, anatomy: all through SLURM
    assert len(submitted) == 12
    shown = {sid: subprocess.run(["scontrol", "show", "job", sid], capture_output=True, text=True).stdout
             for sid in submitted.values()}
    assert all("JobState=COMPLETED" in text for text in shown.values()), shown
    with_gpu = {sid for sid, text in shown.items() if "TresPerJob=gres:gpu:1" in text}
    rule_of = {jobid: rule for rule, jobid in re.findall(r"rule (\w+):\n(?:    .*\n)*?    jobid: (\d+)", output)}
    asked = collections.Counter(rule_of[job] for job, sid in submitted.items() if sid in with_gpu)
    assert asked == {"train": 4, "interpolate": 1}, "the trainings and the interpolation ask SLURM for a GPU, only they"
    train_logs = [p.read_text() for p in (tmp_path / "results" / "logs" / "train").glob("*.log")]
    assert len(train_logs) == 4
    # SLURM's CUDA_VISIBLE_DEVICES reached every training job. (This host has no real GPU, so
    # the jobs train on the CPU; that a set CUDA_VISIBLE_DEVICES skips the lease is tested
    # with fake GPU counts in test_devices.)
    assert all(re.search(r"CUDA_VISIBLE_DEVICES=\d+ set by the scheduler; no lease", text) for text in train_logs)
    assert list((tmp_path / "results" / "summary").glob("*/summary.csv"))
