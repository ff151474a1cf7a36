"""The CUDA path: masked training, resuming across devices, snapshots (theta_k),
interpolation with BatchNorm recomputed, the fused optimizers, and deterministic mode.

Every comparison is a helper that takes `device`. Each test runs it on "cuda" (marked `gpu`,
skipped where torch sees no CUDA device) and, where that is cheap (about 4 s for all of
them on 2 CPU cores), on "cpu" too: CPU against CPU, a check of the comparison itself, held
to the same bits wherever the project promises them on the CPU. Arithmetic is strict
float32 (the default `train.precision: fp32`), so a GPU result is compared with the CPU's
to rounding, never bit for bit.

On a GPU machine: `pytest tests/gpu -q` (well under a minute); `pytest tests/gpu -m gpu`
runs the CUDA variants only.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lth.nn import checkpoint, models, numerics, optim
from lth.report import instability
from lth.nn.training import Split, apply_mask, train

CUDA = torch.cuda.is_available()
NO_CUDA = ("no CUDA device: torch.cuda.is_available() is False"
           + (f" (torch {torch.__version__} is a CPU-only build)" if torch.version.cuda is None else ""))
ON_CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason=NO_CUDA)], id="cuda")
DEVICES = ["cpu", ON_CUDA]  # "cpu": the sanity variant of the same comparison

RECIPE = {"optimizer": "adam", "lr": 1.2e-3, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 20,
          "iterations": "30it", "eval_every": "10it", "seed": 0}
SGD = dict(RECIPE, optimizer="sgd", lr=0.05, weight_decay=1e-4)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def strict_float32():
    """fp32 as the training jobs configure it; torch's own defaults restored afterwards."""
    numerics.configure("fp32", False)
    yield
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False


# ---------------------------------------------------------------- helpers

def splits(device, shape=(28, 28), sizes=(200, 50, 50), seed=0) -> dict:
    """Random normalised inputs of `shape` with random labels, on `device`."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        return Split(torch.randn(n, *shape, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device))
    return dict(zip(("train", "validation", "test"), (split(n) for n in sizes)))


def half_mask(model) -> dict:
    rng = np.random.default_rng(0)
    return {n: rng.random(tuple(model.get_parameter(n).shape)) < 0.5 for n in model.prunable()}


def lenet(device, dropout=0.0):
    model = models.build("lenet_300_100", seed=0, dropout=dropout).to(device)
    return model, half_mask(model)


def on_cpu(model) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def assert_pruned_zero(state: dict, mask: dict) -> None:
    for name, keep in mask.items():
        pruned = state[name].cpu()[~torch.from_numpy(keep)]
        assert torch.count_nonzero(pruned) == 0, f"{name}: pruned weights are not zero"


def assert_finite(state: dict) -> None:
    for name, value in state.items():
        assert torch.isfinite(value.float()).all(), f"{name} is not finite"


def relative_distance(a: dict, b: dict, start: dict) -> float:
    """||a - b|| / ||b - start|| over the floating tensors: how far apart two trainings
    ended, against how far one of them moved."""
    keys = [k for k in a if a[k].is_floating_point()]
    apart = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in keys)
    moved = sum(float((b[k].double() - start[k].double()).pow(2).sum()) for k in keys)
    return (apart / moved) ** 0.5


def assert_close_training(state: dict, reference: dict, start: dict, metrics: list, ref_metrics: list) -> None:
    """Another device's training against the CPU's: the weights a small fraction of the
    distance trained apart, every evaluation's loss within 0.2 %."""
    assert relative_distance(state, reference, start) < 2e-2
    assert [(m["iteration"], m["split"]) for m in metrics] == [(m["iteration"], m["split"]) for m in ref_metrics]
    for mine, ref in zip(metrics, ref_metrics):
        assert mine["loss"] == pytest.approx(ref["loss"], rel=2e-3), mine


class Interrupt(Exception):
    pass


def stop_at(prefix: str):
    def log(line):
        if line.startswith(prefix):
            raise Interrupt
    return log


# ---------------------------------------------------------------- (a) masked training

@pytest.mark.slow
@pytest.mark.parametrize("settings", [RECIPE, SGD], ids=["adam", "sgd"])
@pytest.mark.parametrize("device", DEVICES)
def test_masked_training_keeps_pruned_weights_zero_and_is_close_to_the_cpu(device, settings):
    reference, mask = lenet("cpu")
    start = on_cpu(reference)
    expected = train(reference, mask, splits("cpu"), settings)
    model, mask = lenet(device)
    result = train(model, mask, splits(device), settings)
    state = on_cpu(model)
    assert next(model.parameters()).device.type == device
    assert result.iterations == 30 and max(m["iteration"] for m in result.metrics) == 30
    assert_pruned_zero(state, mask)
    assert_finite(state)
    if device == "cpu":
        assert all(torch.equal(v, on_cpu(reference)[k]) for k, v in state.items())
        assert result.metrics == expected.metrics
    else:
        assert_close_training(state, on_cpu(reference), start, result.metrics, expected.metrics)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_bf16_forward_passes_keep_float32_weights_and_pruned_zeros(device):
    """train.precision: bf16 on the device: every forward in bfloat16, weights float32,
    pruned weights zero, and the result near the float32 run (8 mantissa bits apart)."""
    reference, mask = lenet(device)
    start = {k: v.clone() for k, v in on_cpu(reference).items()}  # on the CPU a view, not a copy
    expected = train(reference, mask, splits(device), RECIPE)
    model, mask = lenet(device)
    seen = set()
    model.fc1.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    result = train(model, mask, splits(device), dict(RECIPE, precision="bf16"))
    state = on_cpu(model)
    assert seen == {torch.bfloat16} and all(v.dtype == torch.float32 for v in state.values())
    assert_pruned_zero(state, mask)
    assert_finite(state)
    assert relative_distance(state, on_cpu(reference), start) < 0.2
    assert result.metrics[-1]["loss"] == pytest.approx(expected.metrics[-1]["loss"], rel=0.05)


# ---------------------------------------------------------------- (b) resume across devices

RESUME = dict(RECIPE, augment=True)  # augmentation offsets are drawn on the CPU: same on every device
RESUME_CASES = [pytest.param("cpu", "cpu", id="cpu-cpu"),
                pytest.param("cpu", "cuda", marks=ON_CUDA.marks, id="cpu-cuda"),
                pytest.param("cuda", "cpu", marks=ON_CUDA.marks, id="cuda-cpu"),
                pytest.param("cuda", "cuda", marks=ON_CUDA.marks, id="cuda-cuda")]


@pytest.mark.slow
@pytest.mark.parametrize("written, resumed", RESUME_CASES)
def test_a_checkpoint_resumes_on_another_device(tmp_path, written, resumed):
    """Interrupted at iteration 20 (checkpoints every 7: the last at 14) on one device,
    resumed on the other: 30 iterations in all, pruned weights zero, close to an
    uninterrupted CPU run. A CPU checkpoint has no GPU RNG state: the GPU generator is
    reseeded and the log says so."""
    whole, mask = lenet("cpu")
    start = on_cpu(whole)
    expected = train(whole, mask, splits("cpu"), RESUME)

    ckpt = checkpoint.Checkpointing(tmp_path / "c.ckpt", every=7, identity="gpu-test")
    first, mask = lenet(written)
    with pytest.raises(Interrupt):
        train(first, mask, splits(written), RESUME, checkpointing=ckpt, log=stop_at("it 20/"))
    assert ckpt.path.exists()

    model, mask = lenet(resumed)
    lines = []
    result = train(model, mask, splits(resumed), RESUME, checkpointing=ckpt, log=lines.append)
    assert "resuming from checkpoint at iteration 14" in lines
    reseeded = [line for line in lines if "GPU generator reseeded" in line]
    assert len(reseeded) == (1 if (written, resumed) == ("cpu", "cuda") else 0), lines
    assert result.iterations == 30 and [m["iteration"] for m in result.metrics][-3:] == [30, 30, 30]
    state = on_cpu(model)
    assert_pruned_zero(state, mask)
    assert_finite(state)
    if written == resumed == "cpu":
        assert result.metrics == expected.metrics
        assert all(torch.equal(v, on_cpu(whole)[k]) for k, v in state.items())
    else:
        assert_close_training(state, on_cpu(whole), start, result.metrics, expected.metrics)


# ---------------------------------------------------------------- (c) snapshots: theta_k

@pytest.mark.parametrize("device", DEVICES)
def test_a_snapshot_is_the_short_runs_weights_and_late_resetting_continues_from_it(device):
    """capture=(13,) copies theta_13 on the device; a 13-iteration run (the snapshot stage)
    reaches the same weights (bit for bit on the CPU, to rounding on a GPU); training from
    theta_13 with start=13 continues the schedule with the mask held."""
    settings = dict(RECIPE, augment=True, warmup="5it")
    long_model, mask = lenet(device)
    result = train(long_model, mask, splits(device), settings, capture=(13,))
    theta_k = result.snapshots[13]
    assert all(v.device.type == device for v in theta_k.values())
    short, mask = lenet(device)
    train(short, mask, splits(device), dict(settings, iterations="13it"))
    for name, value in short.state_dict().items():
        if device == "cpu":
            assert torch.equal(theta_k[name], value), name
        else:
            torch.testing.assert_close(theta_k[name], value, rtol=1e-5, atol=1e-7)
    assert_pruned_zero(theta_k, mask)

    late, _ = lenet(device)
    late.load_state_dict(theta_k)
    metrics = train(late, mask, splits(device), settings, start=13).metrics
    assert [m["iteration"] for m in metrics][0] == 13 and max(m["iteration"] for m in metrics) == 30
    assert_pruned_zero(on_cpu(late), mask)
    assert_finite(on_cpu(late))


# ---------------------------------------------------------------- (d) interpolation with BatchNorm

def interpolation_rows(device) -> tuple[list, dict]:
    """instability.evaluate_path between two masked ResNet-20s (width 1/4) on `device`,
    BatchNorm recomputed on 3 fixed batches; returns the rows and the final state."""
    model = models.build("resnet20", width=0.25).to(device)
    mask = half_mask(model)
    ends = []
    for seed in (1, 2):
        state = {k: v.numpy() for k, v in models.build("resnet20", seed, width=0.25).state_dict().items()}
        ends.append({k: np.where(mask[k], v, 0).astype(v.dtype) if k in mask else v for k, v in state.items()})
    data = splits(device, shape=(3, 32, 32), sizes=(96, 10, 128))
    bn_inputs = [data["train"].x[i * 32:(i + 1) * 32] for i in range(3)]
    rows = instability.evaluate_path(model, *ends, instability.alphas(5),
                                     {"test": data["test"], "train": data["train"]}, bn_inputs)
    return rows, on_cpu(model), mask


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_interpolation_with_batchnorm_recomputed_agrees_with_the_cpu(device):
    expected, expected_state, _ = interpolation_rows("cpu")
    rows, state, mask = interpolation_rows(device)
    assert [(r["alpha"], r["split"]) for r in rows] == [(r["alpha"], r["split"]) for r in expected]
    for mine, ref in zip(rows, expected):
        assert np.isfinite(mine["loss"])
        assert mine["loss"] == pytest.approx(ref["loss"], rel=1e-3), mine
        assert abs(mine["error"] - ref["error"]) <= 2 / 96 + 1e-9, mine  # an argmax near a tie may flip
    running = [k for k in state if k.endswith(("running_mean", "running_var"))]
    assert running and all(torch.allclose(state[k], expected_state[k], rtol=1e-3, atol=1e-4) for k in running)
    assert int(state["bn.num_batches_tracked"]) == 3  # recomputed at the last alpha on the 3 batches
    assert_pruned_zero(state, mask)
    if device == "cpu":
        assert rows == expected


# ---------------------------------------------------------------- (e) fused optimizers

def optimizer_trajectories(device, settings, steps=5) -> tuple:
    """The same masked gradients (seeded, one set per step) fed to lth.nn.optim's optimizer,
    torch.optim's fused one and torch.optim's default one, from the same masked LeNet
    weights. Returns each's parameters (on the CPU) after every step, the masks by
    parameter index, the lth optimizer's state tensors and the parameter count."""
    model, mask = lenet(device)
    masks = [m for _, m in apply_mask(model, mask)]
    names = [n for n, _ in model.named_parameters()]
    masked = [names.index(n) for n in mask]
    start = [p.detach().clone() for p in model.parameters()]
    lr, wd = float(settings["lr"]), float(settings["weight_decay"])
    params = {k: [p.clone().requires_grad_() for p in start] for k in ("lth", "torch_fused", "torch_default")}
    if settings["optimizer"] == "adam":
        torch_opts = {k: torch.optim.Adam(params[k], lr=lr, weight_decay=wd, fused=k == "torch_fused" or None)
                      for k in ("torch_fused", "torch_default")}
    else:
        torch_opts = {k: torch.optim.SGD(params[k], lr=lr, momentum=settings["momentum"], weight_decay=wd,
                                         fused=k == "torch_fused" or None) for k in ("torch_fused", "torch_default")}
    opts = {"lth": optim.make(params["lth"], settings), **torch_opts}
    g = torch.Generator().manual_seed(0)
    history = {k: [] for k in params}
    for _ in range(steps):
        grads = [torch.randn(p.shape, generator=g).mul_(1e-2).to(device) for p in start]
        torch._foreach_mul_([grads[i] for i in masked], masks)  # as the training loop masks them
        for name, opt in opts.items():
            for p, grad in zip(params[name], grads):
                p.grad = grad.clone()
            opt.step()
            history[name].append([p.detach().cpu().clone() for p in params[name]])
    state = opts["lth"].state()
    buffers = state["exp_avg"] + state["exp_avg_sq"] if "exp_avg" in state else state["momentum_buffer"]
    return history, [(i, m.cpu()) for i, m in zip(masked, masks)], [b.cpu() for b in buffers], len(start)


@pytest.mark.parametrize("settings", [dict(RECIPE, weight_decay=1e-4), SGD], ids=["adam", "sgd"])
@pytest.mark.parametrize("device", DEVICES)
def test_fused_optimizers_match_torch_optim_with_masking(device, settings):
    history, masks, buffers, count = optimizer_trajectories(device, settings)
    for step, (mine, fused, default) in enumerate(zip(history["lth"], history["torch_fused"],
                                                      history["torch_default"])):
        for i, (a, b, c) in enumerate(zip(mine, fused, default)):
            assert torch.equal(a, b), f"step {step}, parameter {i}: not torch's fused kernel's bits"
            torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6, msg=f"step {step}, parameter {i}")
        for i, m in masks:
            for params in (mine, default):
                assert torch.count_nonzero(params[i][m == 0]) == 0, f"step {step}: a pruned weight moved"
    for i, m in masks:  # optimizer state of pruned weights stays exactly zero
        for buffer in buffers[i::count]:
            assert torch.count_nonzero(buffer[m == 0]) == 0
    assert any(not torch.equal(a, b) for a, b in zip(history["lth"][0], history["lth"][-1])), "nothing trained"


# ---------------------------------------------------------------- (f) deterministic mode

DETERMINISTIC_MODELS = (("lenet_300_100", (28, 28), {}), ("conv2", (3, 32, 32), {"width": 0.25}),
                        ("resnet20", (3, 32, 32), {"width": 0.25}))


def deterministic_digests(device) -> dict:
    """sha256 of the weights after 20 masked, augmented iterations of each model on
    `device` (deterministic mode is the caller's business: it must precede cuBLAS)."""
    digests = {}
    for name, shape, options in DETERMINISTIC_MODELS:
        model = models.build(name, seed=0, **options).to(device)
        train(model, half_mask(model), splits(device, shape=shape, sizes=(100, 20, 20)),
              dict(RECIPE, iterations="20it", augment=len(shape) == 3))
        h = hashlib.sha256()
        for key, value in model.state_dict().items():
            h.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
        digests[name] = h.hexdigest()
    return digests


def digests_in_a_fresh_process(device) -> dict:
    """deterministic_digests in a new interpreter with deterministic mode configured before
    any CUDA work (CUBLAS_WORKSPACE_CONFIG is read when cuBLAS starts)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, __file__, "digests", device], capture_output=True, text=True, env=env,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_two_runs_in_deterministic_mode_give_the_same_bits(device):
    if device == "cpu":  # in this process (cheap); the CUDA variant needs fresh processes
        numerics.configure("fp32", True)
        first, second = deterministic_digests(device), deterministic_digests(device)
    else:
        first, second = digests_in_a_fresh_process(device), digests_in_a_fresh_process(device)
    assert set(first) == {name for name, _, _ in DETERMINISTIC_MODELS}
    assert first == second


if __name__ == "__main__":  # `python tests/gpu/test_cuda.py digests DEVICE`: one deterministic run
    numerics.configure("fp32", True)
    print(json.dumps(deterministic_digests(sys.argv[2])))
