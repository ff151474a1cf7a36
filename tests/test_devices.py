import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lth.nn import devices

HOLD = """
import sys, time
sys.path.insert(0, {src!r})
from lth.nn import devices
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
    slurm = {"CUDA_VISIBLE_DEVICES": "3", "SLURM_JOB_ID": "17", "SLURM_JOB_GPUS": "3"}
    device, lease = devices.resolve("cuda", slurm, count=1, lock_dir=tmp_path)
    assert (device, lease) == ("cuda:0", None) and not list(tmp_path.iterdir())
    assert "set by the scheduler; no lease" in devices.describe(device, None, slurm)


def test_resolve_leases_on_a_workstation(tmp_path):
    first, lease1 = devices.resolve("auto", {}, count=2, lock_dir=tmp_path)
    second, lease2 = devices.resolve("cuda", {}, count=2, lock_dir=tmp_path)
    assert {first, second} == {"cuda:0", "cuda:1"}
    lease1.release()
    third, _ = devices.resolve("auto", {}, count=2, lock_dir=tmp_path)
    assert third == first


def test_several_visible_gpus_are_leased_among_by_their_physical_names(tmp_path):
    """A shell exporting CUDA_VISIBLE_DEVICES=0,1,2,3 used to send every job to cuda:0."""
    shell = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    got = [devices.resolve("auto", shell, count=4, lock_dir=tmp_path) for _ in range(4)]
    assert sorted(device for device, _ in got) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert "among CUDA_VISIBLE_DEVICES=0,1,2,3" in devices.describe(*got[0], shell)
    # another shell sees only GPUs 2 and 3, as its cuda:0 and cuda:1: both are taken
    assert devices.try_lease(2, tmp_path, names=["2", "3"]) is None
    for _, lease in got:
        lease.release()
    reordered = devices.try_lease(2, tmp_path, names=["3", "2"])
    assert reordered.index == 0 and (tmp_path / "gpu3.lock").exists()


def test_several_gpus_in_one_slurm_allocation_are_leased_per_job(tmp_path):
    """`sbatch --gpus=4` running snakemake inside: four jobs, four GPUs (SLURM numbers each
    job's GPUs from 0, so the leases are per job, by index)."""
    job = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    got = [devices.resolve("cuda", job, count=4, lock_dir=tmp_path) for _ in range(4)]
    assert sorted(device for device, _ in got) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert sorted(p.name for p in (tmp_path / "slurm-42").iterdir()) == [f"gpu{i}.lock" for i in range(4)]
    fresh = tmp_path / "leases"  # the shared folder made on the way to a job's folder: 1777 too
    devices.resolve("cuda", job, count=4, lock_dir=fresh)
    assert [(p.stat().st_mode & 0o7777) for p in (fresh, fresh / "slurm-42")] == [0o1777, 0o1777]
    other_job = devices.resolve("cuda", dict(job, SLURM_JOB_ID="43"), count=4, lock_dir=tmp_path)
    assert other_job[0] == "cuda:0"  # another allocation's GPUs are other GPUs


def test_mig_names_make_valid_lock_files(tmp_path):
    mig = {"CUDA_VISIBLE_DEVICES": "MIG-GPU-1a2b/1/0,MIG-GPU-1a2b/2/0"}
    device, lease = devices.resolve("cuda", mig, count=2, lock_dir=tmp_path)
    assert device == "cuda:0" and (tmp_path / "gpuMIG-GPU-1a2b_1_0.lock").exists()


def test_one_visible_gpu_is_used_without_a_lease(tmp_path):
    assert devices.resolve("auto", {"CUDA_VISIBLE_DEVICES": "5"}, count=1, lock_dir=tmp_path) == ("cuda:0", None)
    assert devices.resolve("cuda", {}, count=1, lock_dir=tmp_path) == ("cuda:0", None)


def test_gpu_slots_share_each_gpu_among_a_few_jobs(tmp_path):
    leases = [devices.try_lease(2, tmp_path, slots=2) for _ in range(4)]
    assert [(lease.index, lease.slot) for lease in leases] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert devices.try_lease(2, tmp_path, slots=2) is None
    leases[1].release()
    assert devices.try_lease(2, tmp_path, slots=2).index == 1


def test_cpu_and_missing_gpus(tmp_path):
    assert devices.resolve("cpu", {}, count=4, lock_dir=tmp_path) == ("cpu", None)
    assert devices.resolve("auto", {}, count=0, lock_dir=tmp_path) == ("cpu", None)
    with pytest.raises(devices.DeviceError, match=r"device: cuda .*torch.version.cuda.*set device: cpu"):
        devices.resolve("cuda", {}, count=0, lock_dir=tmp_path)


def test_auto_refuses_a_gpu_the_scheduler_allocated_but_torch_cannot_use(tmp_path):
    """A CPU wheel (or a driver older than the wheel's CUDA) on a GPU node: one line, not
    days of CPU training."""
    import torch
    slurm = {"SLURM_JOB_ID": "17", "SLURM_JOB_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0"}
    with pytest.raises(devices.DeviceError) as caught:
        devices.resolve("auto", slurm, count=0, lock_dir=tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "SLURM_JOB_GPUS=0" in message and "torch.version.cuda" in message
    assert str(torch.version.cuda) in message or "CPU-only build" in message
    # a job SLURM gave no GPU (CUDA_VISIBLE_DEVICES hidden) may still fall back
    assert devices.resolve("auto", {"SLURM_JOB_ID": "17", "CUDA_VISIBLE_DEVICES": "NoDevFiles"},
                           count=0, lock_dir=tmp_path) == ("cpu", None)


def test_claim_makes_the_leased_gpu_current(tmp_path, monkeypatch):
    import torch
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: chosen.append(str(device)))
    devices.activate("cuda:3")
    devices.activate("cpu")
    assert chosen == ["cuda:3"]


MULTI_USER = """
import os, sys
sys.path.insert(0, {src!r})
os.umask(0o077)
from pathlib import Path
from lth.nn import devices
lease = devices.try_lease(2, Path({lock_dir!r}))
print(lease.index)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user")
def test_the_lease_directory_works_for_several_users():
    """The first user's umask (077) must not lock the others out of the lease files."""
    import pwd
    import shutil
    import tempfile
    top = Path(tempfile.mkdtemp(prefix="lth-leases-", dir="/tmp"))  # pytest's own tmp is root-only
    top.chmod(0o755)
    lock_dir = top / "leases"
    src = str(Path(__file__).resolve().parents[1] / "src")
    try:
        first = subprocess.run([sys.executable, "-c", MULTI_USER.format(src=src, lock_dir=str(lock_dir))],
                               capture_output=True, text=True)
        assert first.stdout.strip() == "0", first.stderr
        assert lock_dir.stat().st_mode & 0o7777 == 0o1777
        assert (lock_dir / "gpu0.lock").stat().st_mode & 0o777 == 0o666
        nobody = pwd.getpwnam("nobody")
        os.setegid(nobody.pw_gid)
        os.seteuid(nobody.pw_uid)
        try:  # a second user takes a lease in the same directory, on the same files
            lease = devices.try_lease(2, lock_dir)
        finally:
            os.seteuid(0)
            os.setegid(0)
        assert lease is not None and lease.index == 0
        assert (lock_dir / "gpu0.lock").stat().st_uid == 0
    finally:
        shutil.rmtree(top)


def test_describe_says_why():
    assert devices.describe("cpu", None, {}) == "device cpu"
    assert "the only GPU visible" in devices.describe("cuda:0", None, {})


@pytest.mark.slow
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
