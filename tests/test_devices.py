import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lth import devices

HOLD = """
import sys, time
sys.path.insert(0, {src!r})
from lth import devices
from pathlib import Path
lease = devices.try_lease({count}, Path({lock_dir!r}))
print(lease.index if lease else "none", flush=True)
time.sleep(60)
"""


def holder(tmp_path, count):
    src = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(src=src, count=count, lock_dir=str(tmp_path))],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_concurrent_jobs_get_distinct_gpus_and_a_crash_frees_one(tmp_path):
    procs = [holder(tmp_path, 3) for _ in range(4)]
    try:
        ids = [got for _, got in procs]
        assert sorted(ids[:3]) == ["0", "1", "2"] and ids[3] == "none"
        crashed = next(p for p, got in procs if got == "1")
        os.kill(crashed.pid, signal.SIGKILL)
        crashed.wait()
        _, again = holder(tmp_path, 3)
        assert again == "1"
    finally:
        for p, _ in procs:
            p.kill()
        subprocess.run(["pkill", "-f", str(tmp_path)], check=False)


def test_a_scheduler_choice_is_respected_without_a_lease(tmp_path):
    device, lease = devices.resolve("cuda", {"CUDA_VISIBLE_DEVICES": "3"}, count=1, lock_dir=tmp_path)
    assert (device, lease) == ("cuda:0", None) and not list(tmp_path.iterdir())


def test_resolve_leases_on_a_workstation(tmp_path):
    first, lease1 = devices.resolve("auto", {}, count=2, lock_dir=tmp_path)
    second, lease2 = devices.resolve("cuda", {}, count=2, lock_dir=tmp_path)
    assert {first, second} == {"cuda:0", "cuda:1"}
    lease1.release()
    third, _ = devices.resolve("auto", {}, count=2, lock_dir=tmp_path)
    assert third == first


def test_cpu_and_missing_gpus(tmp_path):
    assert devices.resolve("cpu", {}, count=4, lock_dir=tmp_path) == ("cpu", None)
    assert devices.resolve("auto", {}, count=0, lock_dir=tmp_path) == ("cpu", None)
    with pytest.raises(RuntimeError, match="no GPU is visible"):
        devices.resolve("cuda", {}, count=0, lock_dir=tmp_path)


def test_describe_says_why():
    assert "set by the scheduler; no lease" in devices.describe("cuda:0", None, {"CUDA_VISIBLE_DEVICES": "2"})
    assert devices.describe("cpu", None, {}) == "device cpu"


def test_training_jobs_declare_a_gpu_only_for_gpu_runs(tmp_path):
    import shutil
    from conftest import ROOT
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")

    def dry(device):
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "--cores", "2",
                               "--config", f"device={device}", "levels=1"], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout + proc.stderr
    assert "gpu=1" in dry("cuda") and "gpu=1" not in dry("cpu")
