"""No orphans, one writer per stage: a training job stops within seconds when the snakemake
that started it is killed with -9, leaving its checkpoint, and `--rerun-incomplete` resumes
it to the bits of an uninterrupted run; a second process for a running stage fails in one
line."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import SNAKEFILE, jobs, snakemake, tiny_config


def long_config(data_dir):
    return tiny_config(data_dir, levels=0, checkpoint_every="200it",
                       train={"iterations": "6000it", "eval_every": "1000it"})


def job_pids(manifest_part: str) -> list[int]:
    """PIDs of `python -m lth run` processes whose command line names manifest_part."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        argv = proc.info["cmdline"] or []
        if "lth" in argv and "run" in argv and any(manifest_part in a for a in argv) \
                and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


def wait_for(condition, timeout, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


@pytest.mark.slow
def test_kill_9_of_snakemake_stops_the_training_and_rerun_incomplete_resumes_it(tmp_path, small_idx_dataset):
    from lth.plan import config, build as plan
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for workdir in (whole, killed):
        workdir.mkdir()
        (workdir / "config.yaml").write_text(yaml.safe_dump(long_config(small_idx_dataset)))
    stage = plan.build(config.load(killed / "config.yaml")).levels[0]["train"]
    ckpt = killed / "results" / "checkpoints" / f"{stage.id}.ckpt"

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    victim = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--cores", "1"],
                              cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        assert wait_for(ckpt.exists, 120), "no checkpoint appeared"
        assert job_pids(f"train/{stage.id}.json"), "the training job should be running"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        began = time.time()
        assert wait_for(lambda: not job_pids(f"train/{stage.id}.json"), 10), "the training job outlived snakemake"
        print(f"training job gone {time.time() - began:.2f} s after snakemake")
    finally:
        os.killpg(victim.pid, signal.SIGKILL) if victim.poll() is None else None
    assert ckpt.exists() and not (killed / stage.output("record")).exists()
    log = (killed / "results" / "logs" / "train" / f"{stage.id}.log").read_text()
    assert "is gone: stopped at iteration" in log and "checkpoint saved" in log

    snakemake(killed, "--unlock")
    resumed = snakemake(killed, "--rerun-incomplete")
    assert jobs(resumed)["train"] == 1
    log = (killed / "results" / "logs" / "train" / f"{stage.id}.log").read_text()
    assert "resuming from checkpoint at iteration" in log
    assert not ckpt.exists()
    # the stage's log keeps every attempt, each under its header: the lines before the kill too
    attempts = [line for line in log.splitlines() if line.startswith("=== attempt ")]
    assert len(attempts) == 2 and attempts[0].endswith(", from the start"), attempts
    assert attempts[1].endswith(f", from checkpoint results/checkpoints/{stage.id}.ckpt"), attempts
    assert log.index("checkpoint saved") < log.index(attempts[1]) < log.index("resuming from checkpoint")

    snakemake(whole)
    for name in ("weights", "metrics", "spec"):
        assert (killed / stage.output(name)).read_bytes() == (whole / stage.output(name)).read_bytes(), name


@pytest.mark.slow
def test_a_second_process_for_a_running_stage_fails_in_one_line(tmp_path, small_idx_dataset):
    from lth.plan import config, build as plan
    from lth.runtime import job as lth_jobs
    cfg = config.validate(long_config(small_idx_dataset))
    p = plan.build(cfg)
    init, stage = p.stages[p.levels[0]["train"].upstream["start"]], p.levels[0]["train"]
    lth_jobs.write_manifests([init, stage], str(tmp_path / "results"))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))

    def run(kind, **kw):
        return subprocess.Popen([sys.executable, "-m", "lth", "run", lth_jobs.manifest_path("results", kind, p_ids[kind]),
                                 "--data-dir", str(small_idx_dataset), "--checkpoint-every", "200it"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)

    p_ids = {"init": init.id, "train": stage.id}
    assert run("init").wait() == 0
    first = run("train")
    try:
        assert wait_for(lambda: (tmp_path / "results" / "checkpoints" / f"{stage.id}.ckpt").exists(), 120)
        second = run("train")
        out, err = second.communicate(timeout=60)
        assert second.returncode == 2 and out == ""
        assert err.strip() == (f"error: stage results/train/{stage.id} is being written by another process "
                               f"(pid {first.pid}); let it finish or stop it, then run snakemake again")
        # the refused job never writes to the stage's log: only the running one's attempt is there
        log = (tmp_path / "results" / "logs" / "train" / f"{stage.id}.log").read_text()
        assert log.count("=== attempt ") == 1 and f" pid {first.pid} " in log and "being written" not in log
    finally:
        first.kill()
        first.wait()


def test_a_filesystem_without_flock_runs_unlocked_with_a_warning(tmp_path, monkeypatch, capsys):
    import errno
    from lth.runtime import lifeline

    def refuse(*_):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(lifeline.fcntl, "flock", refuse)
    lifeline.StageLock(tmp_path / "locks" / "x.lock", tmp_path / "train" / "x")
    assert "running unlocked" in capsys.readouterr().err


def test_interpolation_and_landscape_stop_when_their_snakemake_is_gone():
    """They keep no checkpoint: the job stops at the next point, in one line, writing nothing."""
    import numpy as np
    import torch

    from lth.report import instability
    from lth.stages import landscape
    from lth.runtime import lifeline
    from lth.nn import models
    from lth.nn.training import Split
    model = models.build("lenet_300_100", 0)
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(20, 28, 28, generator=g), torch.randint(0, 10, (20,), generator=g))
    asked = []

    def stop():  # snakemake dies after the first point
        asked.append(1)
        return "the snakemake that started this job (pid 1) is gone" if len(asked) > 1 else None
    with pytest.raises(lifeline.Orphaned, match=r"is gone: stopped at alpha 0.5; nothing of this stage is written"):
        instability.evaluate_path(model, state, state, np.array([0.0, 0.5, 1.0]), {"test": split}, stop=stop)
    asked.clear()
    zero = {k: np.zeros_like(v) for k, v in state.items()}
    with pytest.raises(lifeline.Orphaned, match="stopped at alpha 0 of the grid"):
        landscape.evaluate_grid(model, state, {**zero, "fc1.weight": np.ones_like(state["fc1.weight"])}, zero,
                                landscape.coordinates(3, 1.0), split, stop=stop)


@pytest.mark.slow
def test_a_job_spawned_as_its_snakemake_dies_is_gone_within_2_s(tmp_path, small_idx_dataset):
    """kill -9 of snakemake at the moment a training job is spawned, at several delays
    (while it starts its interpreter, imports torch, reads data, trains): every job is gone
    within 2 s and leaves no finished stage (at most its checkpoint)."""
    cfg = tiny_config(small_idx_dataset, levels=0, train={"iterations": "3000it", "eval_every": "1000it"})
    took = {}
    for attempt, delay in enumerate((0.0, 0.05, 0.2, 0.5, 0.9, 1.4, 2.5)):
        cfg["results"] = f"results_{attempt}"
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        snake = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--cores", "1"],
                                 cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        part = f"results_{attempt}/.lth/manifests/train/"
        assert wait_for(lambda: job_pids(part), 120, step=0.01), "no training job started"
        time.sleep(delay)
        snake.kill()
        snake.wait()
        killed = time.time()
        assert wait_for(lambda: not job_pids(part), 10, step=0.02), f"delay {delay}: the job outlived its snakemake"
        took[delay] = time.time() - killed
        trained = list((tmp_path / f"results_{attempt}" / "train").glob("*/record.json"))
        assert trained == [], f"delay {delay}: the job finished unseen"
        log = next((tmp_path / f"results_{attempt}" / "logs" / "train").glob("*.attempt.log")).read_text()
        assert "is gone" in log or "was gone before it began" in log, log[-2000:]
    print(f"kill at spawn: seconds from kill -9 to the job gone, by delay: {took}")
    assert max(took.values()) <= 2.0, took


def test_a_wall_clock_step_does_not_make_a_living_snakemake_look_gone(monkeypatch):
    """psutil's create_time adds a boot time derived from the wall clock: an NTP step moved it
    by a second during a CI run and every job after it stopped as an orphan. The start time
    is read from the kernel's ticks since boot, which a clock step does not move."""
    import subprocess
    import sys as _sys

    import psutil

    from lth.runtime import lifeline
    me = psutil.Process()
    watched = lifeline.Scheduler(me.pid, lifeline.started(me))
    assert watched.alive()
    real = psutil.Process.create_time
    monkeypatch.setattr(psutil.Process, "create_time", lambda self: real(self) + 1.0)  # the clock stepped
    assert watched.alive()
    assert not lifeline.Scheduler(me.pid, lifeline.started(me) - 0.5).alive()  # another process on this PID
    child = subprocess.Popen([_sys.executable, "-c", "pass"])
    child_watch = lifeline.Scheduler(child.pid, lifeline.started(psutil.Process(child.pid)))
    child.wait()
    assert not child_watch.alive()  # exited and reaped
