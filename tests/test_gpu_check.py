"""tools/gpu_check.py on a machine without a GPU: the CPU parts give figures, every GPU part
is marked skipped with its reason, and the exit status is 0."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GPU_PARTS = ("gpu_tests", "gpu_speed", "bits_gpu", "concurrency", "fixed_cost_gpu", "checkpoint_gpu")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible: the GPU parts would run")
def test_quick_check_without_a_gpu_runs_the_cpu_parts_and_skips_the_rest(tmp_path):
    out = tmp_path / "check.json"
    # budgets x4: this runs beside another test worker on a shared machine, and the CPU parts'
    # budgets are sized for an idle one (a 3x loaded machine overran bits_cpu's 15 s)
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--quick", "--budget-scale", "4",
                          "--json", str(out)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    parts = json.loads(out.read_text())["parts"]
    assert parts["packages"]["status"] == "ok" and parts["packages"]["versions"]["torch"] == torch.__version__
    assert parts["cpu_lenet"]["status"] == "ok" and parts["cpu_lenet"]["it_s"] > 0
    assert parts["checkpoint_cpu"]["bytes"] > parts["checkpoint_cpu"]["weights_bytes"] > 0
    assert parts["fixed_cost_cpu"]["wall_seconds"] > 0 and parts["bits_cpu"]["budget_s"] == 60
    assert parts["bits_cpu"]["lenet_300_100"]["default"]["identical"]
    assert parts["bits_cpu"]["lenet_300_100"]["deterministic"]["identical"]
    for name in GPU_PARTS:
        assert parts[name]["status"] == "skipped", name
        assert parts[name]["reason"].startswith("no CUDA device"), parts[name]
        assert f"skipped: {parts[name]['reason']}" in run.stdout
