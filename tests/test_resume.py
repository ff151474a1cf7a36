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

from lth import checkpoint, models
from lth.training import train
from test_training import SETTINGS, half_mask, splits

RECIPE = dict(SETTINGS, dropout=0.2, augment=True, warmup="4it", milestones=["20it"], gamma=0.5)


class Interrupt(Exception):
    pass


def fresh():
    model = models.build("lenet_300_100", seed=0, dropout=0.2)
    return model, half_mask(model)


def test_resume_equals_uninterrupted(tmp_path):
    whole, mask = fresh()
    expected = train(whole, mask, splits(), RECIPE)

    ckpt = checkpoint.Checkpointing(tmp_path / "c.pt", every=7, identity="abc")

    def stop_after_checkpoint(line):
        if line.startswith("it 20/"):
            raise Interrupt
    interrupted, mask = fresh()
    with pytest.raises(Interrupt):
        train(interrupted, mask, splits(), RECIPE, log=stop_after_checkpoint, checkpointing=ckpt)
    assert ckpt.path.exists()

    resumed, mask = fresh()
    lines = []
    result = train(resumed, mask, splits(), RECIPE, log=lines.append, checkpointing=ckpt)
    assert "resuming from checkpoint at iteration 14" in lines
    assert result.metrics == expected.metrics
    assert all(torch.equal(v, whole.state_dict()[k]) for k, v in resumed.state_dict().items())


def test_corrupt_or_foreign_checkpoints_are_ignored(tmp_path):
    whole, mask = fresh()
    expected = train(whole, mask, splits(), RECIPE)
    ckpt = checkpoint.Checkpointing(tmp_path / "c.pt", every=7, identity="abc")
    for damage in ("truncate", "bitflip", "foreign"):
        model, mask = fresh()
        with pytest.raises(Interrupt):
            train(model, mask, splits(), RECIPE, checkpointing=ckpt,
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
        result = train(model, mask, splits(), RECIPE, log=lines.append, checkpointing=other)
        assert any(line.startswith("warning: ignoring") for line in lines), damage
        assert not any("resuming" in line for line in lines)
        assert result.metrics == expected.metrics
        ckpt.path.unlink(missing_ok=True)


def test_kill_9_mid_run_then_rerun_gives_identical_outputs(tmp_path, small_idx_dataset):
    """A real training process (the library CLI), killed with SIGKILL after its first
    checkpoint, rerun: final weights and metrics equal an uninterrupted run's exactly."""
    from lth import config, plan
    cfg = config.validate({"data_dir": str(small_idx_dataset), "levels": 0,
                           "data": {"validation_size": 200}, "train": {"iterations": "3000it", "eval_every": "500it"}})
    p = plan.build(cfg)
    init, stage = p.stages[p.levels[0]["train"].upstream["start"]], p.levels[0]["train"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))

    def lth(*args, **kw):
        return subprocess.Popen([sys.executable, "-m", "lth", *map(str, args)], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)

    assert lth("init", "--spec", json.dumps(init.spec()), "--out", init.dir).wait() == 0

    def train_cmd(out, ckpt):
        return ["train", "--spec", json.dumps(stage.spec()), "--model", init.output("model"),
                "--start", init.output("weights"), "--data-dir", small_idx_dataset, "--threads", 1,
                "--out", out, "--checkpoint", ckpt, "--checkpoint-every", "200it"]

    assert lth(*train_cmd("whole", "whole.ckpt")).wait() == 0
    victim = lth(*train_cmd("killed", "killed.ckpt"))
    deadline = time.time() + 120
    while not (tmp_path / "killed.ckpt").exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert victim.poll() is None, "training finished before it could be killed: make it longer"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert (tmp_path / "killed.ckpt").exists() and not (tmp_path / "killed" / "weights.pt").exists()

    rerun = lth(*train_cmd("killed", "killed.ckpt"))
    output, _ = rerun.communicate()
    assert rerun.returncode == 0, output
    assert "resuming from checkpoint at iteration" in output
    assert not (tmp_path / "killed.ckpt").exists() and not (tmp_path / "whole.ckpt").exists()
    for name in ("weights.pt", "metrics.parquet"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
