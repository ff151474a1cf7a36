"""Training that survives being killed: resume from the last checkpoint gives the same bits."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import SETTINGS, half_mask, random_splits

from lth.nn import checkpoint, models
from lth.nn.training import train

RECIPE = dict(SETTINGS, dropout=0.2, augment=True, warmup="4it", milestones=["20it"], gamma=0.5)


class Interrupt(Exception):
    pass


def fresh():
    model = models.build("lenet_300_100", seed=0, dropout=0.2)
    return model, half_mask(model)


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path):
    whole, mask = fresh()
    expected = train(whole, mask, random_splits(), RECIPE)

    ckpt = checkpoint.Checkpointing(tmp_path / "c.ckpt", every=7, identity="abc")

    def stop_after_checkpoint(line):
        if line.startswith("it 20/"):
            raise Interrupt
    interrupted, mask = fresh()
    with pytest.raises(Interrupt):
        train(interrupted, mask, random_splits(), RECIPE, log=stop_after_checkpoint, checkpointing=ckpt)
    assert ckpt.path.exists()
    ckpt.path.rename(tmp_path / "c.pt")  # the name versions before 2026-12-03 gave it: still resumed

    resumed, mask = fresh()
    lines = []
    result = train(resumed, mask, random_splits(), RECIPE, log=lines.append, checkpointing=ckpt)
    assert "resuming from checkpoint at iteration 14" in lines
    checkpoint.remove(ckpt)  # what a finished stage does: both names go
    assert list(tmp_path.iterdir()) == []
    assert result.metrics == expected.metrics
    assert all(torch.equal(v, whole.state_dict()[k]) for k, v in resumed.state_dict().items())


def test_captured_weights_survive_a_resume(tmp_path):
    """A training recording its trajectory (capture) and resumed from a checkpoint holds the
    same captured weights, bit for bit, as an uninterrupted one: the points before the
    checkpoint travel in it."""
    points = (0, 3, 10, 17, 25)
    whole, mask = fresh()
    expected = train(whole, mask, random_splits(), RECIPE, capture=points)
    ckpt = checkpoint.Checkpointing(tmp_path / "c.ckpt", every=7, identity="abc")

    def stop(line):
        if line.startswith("it 20/"):
            raise Interrupt
    interrupted, mask = fresh()
    with pytest.raises(Interrupt):
        train(interrupted, mask, random_splits(), RECIPE, log=stop, checkpointing=ckpt, capture=points)
    resumed, mask = fresh()
    result = train(resumed, mask, random_splits(), RECIPE, checkpointing=ckpt, capture=points)
    assert sorted(result.snapshots) == [p for p in points if p <= 25] == sorted(expected.snapshots)
    for it, state in expected.snapshots.items():
        assert all(torch.equal(v, result.snapshots[it][k]) for k, v in state.items()), it


@pytest.mark.slow
def test_corrupt_or_foreign_checkpoints_are_ignored(tmp_path):
    whole, mask = fresh()
    expected = train(whole, mask, random_splits(), RECIPE)
    ckpt = checkpoint.Checkpointing(tmp_path / "c.ckpt", every=7, identity="abc")
    for damage in ("truncate", "bitflip", "foreign"):
        model, mask = fresh()
        with pytest.raises(Interrupt):
            train(model, mask, random_splits(), RECIPE, checkpointing=ckpt,
                  log=lambda line: (_ for _ in ()).throw(Interrupt) if line.startswith("it 20/") else None)
        if damage == "truncate":
            ckpt.path.write_bytes(ckpt.path.read_bytes()[:1000])
        if damage == "bitflip":  # same length, inside a tensor's data: unpickles fine
            raw = bytearray(ckpt.path.read_bytes())
            raw[len(raw) // 2] ^= 0x10
            ckpt.path.write_bytes(bytes(raw))
        other = checkpoint.Checkpointing(ckpt.path, 7, "xyz" if damage == "foreign" else "abc")
        lines = []
        model, mask = fresh()
        result = train(model, mask, random_splits(), RECIPE, log=lines.append, checkpointing=other)
        assert any(line.startswith("warning: ignoring") for line in lines), damage
        assert not any("resuming" in line for line in lines)
        assert result.metrics == expected.metrics
        ckpt.path.unlink(missing_ok=True)


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_gives_identical_outputs(tmp_path, small_idx_dataset):
    """A real training job (`python -m lth run MANIFEST`), killed with SIGKILL after its
    first checkpoint, rerun: final weights and metrics equal an uninterrupted run's exactly."""
    from lth.plan import config, build as plan
    from lth.runtime import job as jobs
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))

    def lth(manifest, **kw):
        return subprocess.Popen([sys.executable, "-m", "lth", "run", manifest, "--data-dir", str(small_idx_dataset),
                                 "--threads", "1", "--checkpoint-every", "200it"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)

    manifests = {}
    for root in ("whole", "killed"):  # the same stage (same ID) in two results folders
        # with telemetry: its table, kept in the checkpoint and a scratch file, must come back too
        cfg = config.validate({"results": root, "levels": 0, "data": {"validation_size": 200}, "device": "cpu",
                               "train": {"iterations": "3000it", "eval_every": "500it"},
                               "telemetry": {"levels": [0], "every": "250it", "early_every": "50it",
                                             "early_until": "500it", "examples": 200}})
        p = plan.build(cfg)
        init, stage = p.stages[p.levels[0]["train"].upstream["start"]], p.levels[0]["train"]
        # the manifests name paths relative to the working directory (tmp_path)
        jobs.write_manifests([init, stage], str(tmp_path / root))
        manifests[root] = {s.kind: jobs.manifest_path(str(tmp_path / root), s.kind, s.id) for s in (init, stage)}
        out, _ = lth(manifests[root]["init"]).communicate()
        assert "error" not in out, out
    ckpt = tmp_path / "killed" / "checkpoints" / f"{stage.id}.ckpt"

    assert lth(manifests["whole"]["train"]).wait() == 0
    victim = lth(manifests["killed"]["train"])
    deadline = time.time() + 120
    while not ckpt.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert victim.poll() is None, "training finished before it could be killed: make it longer"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_dir, whole_dir = tmp_path / "killed" / "train" / stage.id, tmp_path / "whole" / "train" / stage.id
    assert ckpt.exists() and not (killed_dir / "weights.pt").exists()

    rerun = lth(manifests["killed"]["train"])
    output, _ = rerun.communicate()
    assert rerun.returncode == 0, output
    assert "resuming from checkpoint at iteration" in output
    assert not ckpt.exists() and not (tmp_path / "whole" / "checkpoints" / f"{stage.id}.ckpt").exists()
    assert not (tmp_path / "killed" / "checkpoints" / f"{stage.id}.telemetry").exists()
    for name in ("weights.pt", "metrics.parquet", "spec.json", "telemetry.parquet"):
        assert (killed_dir / name).read_bytes() == (whole_dir / name).read_bytes(), name


def test_a_cpu_checkpoint_resumes_on_a_gpu_with_a_reseeded_generator(monkeypatch):
    """A checkpoint written on the CPU keeps no GPU RNG state (an empty float tensor): on a
    GPU it used to reach torch.cuda.set_rng_state ("RNG state must be a ByteTensor")."""
    from lth.nn import training
    calls, lines = [], []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append(("set", state.dtype)))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(("seed", seed)))
    training.restore_device_rng(torch.empty(0), "cuda:0", 1234, lines.append)
    assert calls == [("seed", 1234)] and "reseeded with 1234" in lines[0]
    calls.clear()
    training.restore_device_rng(torch.zeros(16, dtype=torch.uint8), "cuda:0", 1234, lines.append)
    assert calls == [("set", torch.uint8)]


def test_a_gpu_checkpoint_resumes_on_the_cpu_with_a_reseeded_dropout_generator(tmp_path):
    """Dropout on a GPU run draws from the GPU generator; the CPU state it saved was never
    advanced. Resumed on the CPU, the generator is reseeded from the stage seed and the
    iteration (logged), so the same checkpoint resumes the same way every time."""
    ckpt = checkpoint.Checkpointing(tmp_path / "c.ckpt", every=7, identity="abc")
    model, mask = fresh()
    with pytest.raises(Interrupt):
        train(model, mask, random_splits(), RECIPE, checkpointing=ckpt,
              log=lambda line: (_ for _ in ()).throw(Interrupt) if line.startswith("it 20/") else None)
    as_cpu = ckpt.path.read_bytes()  # written on the CPU: its CPU generator state is restored
    payload = checkpoint.load(ckpt)
    del payload["identity"]
    checkpoint.save(ckpt, {**payload, "device_rng": torch.zeros(16, dtype=torch.uint8)})  # as a GPU run writes it
    written, runs = ckpt.path.read_bytes(), []
    for _ in range(2):
        ckpt.path.write_bytes(written)  # each run checkpoints again on the CPU: start both from the GPU's
        lines = []
        model, mask = fresh()
        runs.append((train(model, mask, random_splits(), RECIPE, log=lines.append, checkpointing=ckpt).metrics, lines))
    assert all(any(line.startswith("checkpoint written on a GPU: CPU generator reseeded with") for line in lines)
               for _, lines in runs)
    assert runs[0][0] == runs[1][0]
    ckpt.path.write_bytes(as_cpu)  # the same state resumed without the reseed: other dropout draws
    model, mask = fresh()
    restored = train(model, mask, random_splits(), RECIPE, checkpointing=ckpt).metrics
    assert restored[:4] == runs[0][0][:4] and restored != runs[0][0]


def test_checkpoint_intervals_in_iterations_wall_time_or_both(tmp_path, monkeypatch):
    assert checkpoint.parse_interval("5000it", 100) == (5000, None)
    assert checkpoint.parse_interval("2ep", 100) == (200, None)
    assert checkpoint.parse_interval("10min", 100) == (0, 600)
    assert checkpoint.parse_interval("5000it,30s", 100) == (5000, 30)
    assert checkpoint.parse_interval(3000, 100) == (3000, None)
    for doubled in ("10min,30s", "5000it,2ep", "1it,1s,1h"):
        with pytest.raises(ValueError, match="one of each"):
            checkpoint.parse_interval(doubled, 100)
    clock = [1000.0]
    monkeypatch.setattr(checkpoint.time, "monotonic", lambda: clock[0])
    timed = checkpoint.Checkpointing(tmp_path / "c.ckpt", 0, "abc", seconds=600)
    assert not timed.due(5)
    clock[0] += 600
    assert timed.due(6)  # ten minutes since the job started
    checkpoint.save(timed, {"iteration": 6})
    assert not timed.due(7)  # the clock restarts at each checkpoint
    both = checkpoint.Checkpointing(tmp_path / "d.ckpt", 50, "abc", seconds=600)
    assert both.due(50) and not both.due(51)
    clock[0] += 601
    assert both.due(51)


def test_a_checkpoint_is_streamed_and_its_digest_guards_it(tmp_path):
    ckpt = checkpoint.Checkpointing(tmp_path / "c.ckpt", 7, "abc")
    checkpoint.save(ckpt, {"iteration": 3, "model": {"w": torch.arange(5.0)}})
    raw = ckpt.path.read_bytes()
    assert raw.startswith(checkpoint.MAGIC) and checkpoint._body(raw) is not None
    assert checkpoint._body(raw[:-1] + bytes([raw[-1] ^ 1])) is None
