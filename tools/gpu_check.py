"""What a GPU machine gives this project, measured in one command of at most 7 minutes.

    python tools/gpu_check.py [--json OUT] [--quick] [--budget-scale X] [--wheels DIR]

Run it from the repository root of a checkout on the GPU machine (with the project's venv:
`.venv/bin/python tools/gpu_check.py`). Parts, in order, each with a time budget (the
budgets add up to 410 s; --quick shrinks the iteration counts, not the budgets; --budget-scale
multiplies them):

  packages        which of torch, numpy, pandas, pyarrow, jsonschema, snakemake, pytest import;
                  with --wheels DIR the missing ones are installed from the wheels in DIR and
                  nowhere else (pip install --isolated --no-index --find-links DIR ...), and the
                  command and files are printed; without it, the parts that need them are skipped
  gpu_tests       `pytest tests/gpu -q`: passed / failed / skipped counts
  cpu_lenet       LeNet-300-100 it/s on this machine's CPU, 1 thread, batch 60: the reference
  gpu_speed       it/s on the GPU: LeNet-300-100 and Conv-2 (batch 60), ResNet-20 and VGG-16
                  (batch 128, with and without augmentation; and in bf16 autocast), and each
                  job's peak allocated memory (100 synthetic batches on the device, not a whole
                  dataset)
  bits_cpu/_gpu   per model, whether two runs with the same seeds give the same bits, in the
                  default and in deterministic mode (lth.nn.numerics.configure), and the
                  deterministic slowdown; one fresh process per mode, since deterministic mode
                  must be set before cuBLAS starts (CPU: LeNet only)
  concurrency     aggregate LeNet it/s of 1, 4 and 8 training processes sharing the one GPU
  fixed_cost_*    a job's fixed cost: wall time of a fresh process that imports torch and lth,
                  builds LeNet, puts a Fashion-MNIST-sized dataset on the device and trains 1
                  iteration (with the evaluations a job does at its start and end), by phase
  checkpoint_*    size, write and read time of a VGG-16 training checkpoint (weights and SGD
                  momentum) written with lth.nn.checkpoint.save

Every training goes through lth.nn.training.train on synthetic data shaped as each model expects
(random 28x28 images for LeNet; 3x32x32 for Conv-2, ResNet-20 and VGG-16), so no dataset is
needed, in the project's default arithmetic (strict float32, `train.precision: fp32`), but
for the two rows marked bf16.
it/s = iterations / Result.train_seconds (the optimisation steps only); the iteration counts
are multiples of 100, so the loop's every-100-steps loss check waits for the GPU just before
its clock stops. Learning rates are small: they do not change the speed and keep training on
random labels finite.

Without a GPU the CPU parts run and each GPU part is marked skipped with its reason. All
figures go to gpu_check.json (or --json). Exit status 1 if a part failed, else 0.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(ROOT / "src"))  # a checkout without `pip install -e .`
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))

PACKAGES = {  # import name: what needs it
    "torch": "every measurement",
    "numpy": "every measurement (lth, torch)",
    "pandas": "the GPU tests (lth.report.instability), the workflow's tables",
    "pyarrow": "the workflow's tables (not this check's measurements)",
    "jsonschema": "the workflow's config validation (not this check's measurements)",
    "snakemake": "the workflow (not this check's measurements)",
    "pytest": "the GPU tests",
}
NEEDS = {"packages": (), "gpu_tests": ("torch", "numpy", "pandas", "pytest")}  # others: torch, numpy

# (model, input shape, batch, augment, settings): the papers' recipes, with small learning rates
ADAM = {"optimizer": "adam", "lr": 1.2e-3, "momentum": 0.0, "weight_decay": 0.0}
SGD = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}
LENET = ("lenet_300_100", (28, 28), 60, False, ADAM)
SPEED = [LENET, ("conv2", (3, 32, 32), 60, False, dict(ADAM, lr=2e-4)),
         ("resnet20", (3, 32, 32), 128, False, SGD), ("resnet20", (3, 32, 32), 128, True, SGD),
         ("vgg16", (3, 32, 32), 128, False, SGD), ("vgg16", (3, 32, 32), 128, True, SGD)]
# train.precision: bf16 (autocast forward passes), beside the float32 rows above
BF16 = [("resnet20", (3, 32, 32), 128, False, dict(SGD, precision="bf16")),
        ("vgg16", (3, 32, 32), 128, False, dict(SGD, precision="bf16"))]
BITS_MODELS = {"cpu": [LENET], "gpu": [c for c in SPEED if not c[3]]}
CONFIGS = {c[0]: c for c in SPEED if not c[3]}


class Skip(Exception):
    """A part (or piece of one) that cannot run here; the message says why."""


# ---------------------------------------------------------------- shared training helpers

def settings_for(config, iterations: int) -> dict:
    _, _, batch, augment, recipe = config
    return {**recipe, "batch_size": batch, "augment": augment, "iterations": iterations,
            "eval_every": iterations, "seed": 0, "divergence_factor": 1e30}


def synthetic(config, device: str, batches: int = 100) -> dict:
    """Random normalised inputs of the model's shape, random labels: 100 batches of
    training data, 500 examples each for validation and test, on `device`."""
    import torch

    from lth.nn.training import Split
    _, shape, batch, _, _ = config
    g = torch.Generator().manual_seed(0)

    def split(n):
        return Split(torch.randn(n, *shape, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device))
    return {"train": split(batches * batch), "validation": split(500), "test": split(500)}


def build(config, device: str, width: float = 1.0):
    from lth.nn import models
    return models.build(config[0], seed=0, width=width).to(device)


def rounded(iterations: float) -> int:
    return max(100, int(round(iterations / 100)) * 100)


def rate(config, device: str, seconds: float, width: float = 1.0, deadline: float | None = None) -> dict:
    """it/s of lth.nn.training.train: a 100-iteration warm-up, a 100-iteration probe, then
    about `seconds` of training (less if the deadline is nearer; the probe's figure if
    there is no room for more)."""
    import torch

    from lth.nn.training import train
    if device.startswith("cuda"):  # peak memory of this job: what gpu_slots can pack per GPU
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model, data = build(config, device, width), synthetic(config, device)
    train(model, None, data, settings_for(config, 100))
    result = train(model, None, data, settings_for(config, 100))
    room = seconds if deadline is None else min(seconds, remaining(deadline) - 1)
    if room > 2 * result.train_seconds:
        result = train(model, None, data, settings_for(config, rounded(room * 100 / result.train_seconds)))
    iterations = result.iterations
    figures = {"model": config[0], "batch": config[2], "augment": config[3], "iterations": iterations,
               "train_seconds": round(result.train_seconds, 4), "it_s": round(iterations / result.train_seconds, 1)}
    if device.startswith("cuda"):  # synthetic data: 100 batches, not a whole dataset (bench/gpu_memory.py adds it)
        figures["peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return figures


def label(config) -> str:
    return (f"{config[0]} b{config[2]}" + (" augment" if config[3] else "")
            + (f" {config[4]['precision']}" if "precision" in config[4] else ""))


def remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def worker(kind: str, device: str, deadline: float, *extra: str) -> tuple[dict, float]:
    """Run this script as a worker process; (its JSON answer, its wall seconds)."""
    if remaining(deadline) < 1:
        raise Skip("time budget used up")
    began = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, str(SCRIPT), "--worker", kind, "--device", device, *extra],
                             capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=remaining(deadline))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{kind} worker on {device} outlasted the part's budget") from None
    wall = time.perf_counter() - began
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{kind} worker on {device} exited {out.returncode}: {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


# ---------------------------------------------------------------- parts

PARTS: list = []  # (name, budget seconds, needs a GPU, function(ctx, deadline) -> figures)


def part(name: str, budget: int, gpu: bool = False):
    def register(fn):
        PARTS.append((name, budget, gpu, fn))
        return fn
    return register


@part("packages", 90)
def packages(ctx, deadline) -> dict:
    found = present()
    for name, why in PACKAGES.items():
        print(f"  {name:11s} {found[name] or 'MISSING':24s} needed for {why}")
    missing = [n for n, v in found.items() if v is None]
    figures = {"versions": found, "missing": missing, "installed": None}
    if missing and ctx["args"].wheels:
        figures["installed"] = install(missing, ctx["args"].wheels, deadline)
        importlib.invalidate_caches()
        found = present()
        figures.update(versions=found, missing=[n for n, v in found.items() if v is None])
    if not figures["missing"]:
        print("  missing: none")
    else:
        print(f"  missing: {', '.join(figures['missing'])}"
              + ("" if ctx["args"].wheels else "; pass --wheels DIR (a folder of their wheels) to install them")
              + "; the parts that need them are skipped")
    ctx["have"] = {n for n, v in found.items() if v is not None}
    return figures


def present() -> dict:
    """{import name: installed version, or None where it does not import}."""
    versions = {}
    for name in PACKAGES:
        if importlib.util.find_spec(name) is None:
            versions[name] = None
            continue
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "(version unknown)"
    return versions


def install(names: list, wheels: str, deadline: float) -> list:
    """pip install, one package at a time (one without a wheel or a dependency's wheel then
    fails alone), from the wheels in `wheels` only: --isolated, so no pip config or PIP_*
    variable adds an index or another folder. Prints each command and its wheel file."""
    folder = Path(wheels).resolve()
    files = sorted(p.name for p in folder.glob("*.whl")) if folder.is_dir() else []
    runs = []
    for name in names:
        mine = [f for f in files if f.lower().replace("-", "_").startswith(name.lower() + "_")]
        if not mine:
            print(f"  {name}: no wheel of it in {folder}; not installed")
            continue
        command = [sys.executable, "-m", "pip", "install", "--isolated", "--no-index", "--find-links", str(folder), name]
        print(f"  {name}: from {', '.join(mine)} in {folder}\n    running: {' '.join(command)}")
        runs.append(pip(command, deadline))
    return runs


def pip(command: list, deadline: float) -> dict:
    """One pip run; prints what it installed (dependencies included) or why it failed."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=max(1, remaining(deadline)))
    except subprocess.TimeoutExpired:
        print("    pip install outlasted the part's budget and was stopped")
        return {"command": command, "returncode": None, "installed": []}
    done = [line for line in out.stdout.splitlines() if line.startswith("Successfully installed")]
    installed = done[0].split()[2:] if done else []
    print(f"    pip exited {out.returncode}; installed: {', '.join(installed) or 'nothing'}")
    if out.returncode != 0:
        print("    " + "\n    ".join((out.stderr.strip().splitlines() or ["(no output)"])[-3:]))
    return {"command": command, "returncode": out.returncode, "installed": installed}


@part("gpu_tests", 75, gpu=True)
def gpu_tests(ctx, deadline) -> dict:
    command = [sys.executable, "-m", "pytest", "tests/gpu", "-q"]
    print("  running: " + " ".join(command))
    try:
        out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=remaining(deadline))
    except subprocess.TimeoutExpired:
        raise RuntimeError("pytest tests/gpu outlasted the part's budget") from None
    lines = out.stdout.strip().splitlines() or [""]
    counts = {kind: int(n) for n, kind in
              re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|warnings?)", lines[-1])}
    print(f"  {lines[-1]}")
    figures = {"returncode": out.returncode, "counts": counts, "summary": lines[-1]}
    if out.returncode != 0:
        print("  " + "\n  ".join(lines[-30:]))
        figures.update(status="failed", reason=f"pytest tests/gpu exited {out.returncode}: {lines[-1]}")
    return figures


@part("cpu_lenet", 10)
def cpu_lenet(ctx, deadline) -> dict:
    figures = rate(LENET, "cpu", ctx["target_s"] * 0.8, deadline=deadline)
    print(f"  {label(LENET)}: {figures['it_s']:.0f} it/s (1 thread, {figures['iterations']} iterations)")
    return figures


@part("gpu_speed", 60, gpu=True)
def gpu_speed(ctx, deadline) -> dict:
    cpu = ctx["parts"].get("cpu_lenet", {}).get("it_s")
    figures = {}
    for i, config in enumerate(SPEED + BF16):
        left = len(SPEED) + len(BF16) - i  # about 3 s each go to the warm-up and the probe
        seconds = min(ctx["target_s"], (remaining(deadline) - 3 * left) / left)
        if remaining(deadline) < 3:
            figures[label(config)] = {"skipped": "time budget used up"}
            print(f"  {label(config)}: skipped (time budget used up)")
            continue
        figures[label(config)] = r = rate(config, ctx["gpu"], seconds, ctx["width"], deadline)
        if cpu:
            r["vs_cpu_lenet"] = round(r["it_s"] / cpu, 2)
        print(f"  {label(config):24s} {r['it_s']:8.0f} it/s" + (f"  ({r['vs_cpu_lenet']}x this CPU's LeNet, "
                                                                 f"{cpu:.0f} it/s)" if cpu else "")
              + (f", peak {r['peak_allocated_mb']:.0f} MiB" if "peak_allocated_mb" in r else ""))
    return figures


def bits(ctx, device: str, configs: list, width: float, deadline) -> dict:
    options = ["--iterations", str(100 if ctx["args"].quick else 200), "--width", str(width),
               "--models", ",".join(c[0] for c in configs)]
    modes = {}
    for i, mode in enumerate(("default", "deterministic")):
        share = remaining(deadline) / (2 - i) - 5  # about 5 s of each process go to starting it
        modes[mode], _ = worker("bits", device, deadline, *options, "--seconds", f"{share:.1f}",
                                *(["--deterministic"] if mode == "deterministic" else []))
    figures = {}
    for name in modes["default"]:
        plain, strict = modes["default"][name], modes["deterministic"][name]
        row = {"default": plain, "deterministic": strict}
        if "seconds" in plain and "seconds" in strict:
            row["deterministic_slowdown"] = round(strict["seconds"] / plain["seconds"], 3)
            row["same_bits_in_both_modes"] = plain["digest"] == strict["digest"]
        figures[name] = row
        print(f"  {name:14s} default: {verdict(plain)}; deterministic: {verdict(strict)}"
              + (f"; deterministic/default time {row['deterministic_slowdown']}" if "deterministic_slowdown" in row else ""))
    return figures


def verdict(run: dict) -> str:
    if "skipped" in run:
        return f"skipped ({run['skipped']})"
    if "error" in run:
        return f"refused ({run['error']})"
    return "same bits" if run["identical"] else "bits differ"


@part("bits_cpu", 15)
def bits_cpu(ctx, deadline) -> dict:
    return bits(ctx, "cpu", BITS_MODELS["cpu"], 1.0, deadline)


@part("bits_gpu", 60, gpu=True)
def bits_gpu(ctx, deadline) -> dict:
    return bits(ctx, ctx["gpu"], BITS_MODELS["gpu"], ctx["width"], deadline)


@part("concurrency", 45, gpu=True)
def concurrency(ctx, deadline) -> dict:
    window = 2.0 if ctx["args"].quick else 5.0
    procs = [start_job(ctx["gpu"]) for _ in range(8)]
    try:
        for p in procs:
            answer(p, deadline, "ready")
        figures = {}
        for n in (1, 4, 8):
            if remaining(deadline) < window + 3:
                figures[str(n)] = {"skipped": "time budget used up"}
                continue
            for p in procs[:n]:
                p.stdin.write(f"go {window}\n")
                p.stdin.flush()
            runs = [json.loads(answer(p, deadline)) for p in procs[:n]]
            total = sum(r["it_s"] for r in runs)
            figures[str(n)] = {"jobs": n, "aggregate_it_s": round(total, 1), "per_job_it_s": [r["it_s"] for r in runs]}
            print(f"  {n} job(s): {total:8.0f} it/s together, {total / n:6.0f} each")
        single = figures["1"].get("aggregate_it_s")
        for row in figures.values():
            if single and "aggregate_it_s" in row:
                row["vs_one_job"] = round(row["aggregate_it_s"] / single, 2)
        return figures
    finally:
        for p in procs:
            stop_job(p)


def start_job(device: str):
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--worker", "job", "--device", device], cwd=ROOT, env=ENV,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
    proc.err = err
    return proc


def answer(proc, deadline: float, expect: str | None = None) -> str:
    """The worker's next line, within the part's budget."""
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, remaining(deadline)))
    line = proc.stdout.readline() if ready else None
    if not line:
        proc.err.seek(0)
        tail = (proc.err.read().strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"a LeNet job {'did not answer in time' if line is None else 'exited'}: {tail}")
    if expect and line.strip() != expect:
        raise RuntimeError(f"a LeNet job said {line.strip()!r}, not {expect!r}")
    return line


def stop_job(proc) -> None:
    try:
        proc.stdin.write("exit\n")
        proc.stdin.close()
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
    proc.err.close()


def fixed_cost(device: str, deadline) -> dict:
    phases, wall = worker("fixed", device, deadline)
    figures = {"wall_seconds": round(wall, 3), "phases_seconds": phases,
               "measures": "fresh python process: import torch and lth, first device op, LeNet built and moved, "
                           "a synthetic Fashion-MNIST-sized uint8 dataset made and prepared on the device "
                           "(stands in for reading the files), 1 training iteration with the evaluations a job "
                           "does at its start and end; no manifest, no outputs written"}
    print(f"  1-iteration LeNet job on {device}: {wall:.2f} s wall; "
          + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    return figures


@part("fixed_cost_cpu", 15)
def fixed_cost_cpu(ctx, deadline) -> dict:
    return fixed_cost("cpu", deadline)


@part("fixed_cost_gpu", 20, gpu=True)
def fixed_cost_gpu(ctx, deadline) -> dict:
    return fixed_cost(ctx["gpu"], deadline)


def checkpoint_figures(device: str, reps: int, width: float = 1.0) -> dict:
    """A VGG-16 checkpoint as training writes it (weights, SGD momentum buffers, RNG
    states), saved `reps` times with lth.nn.checkpoint.save into a temporary folder."""
    import torch

    from lth.nn import checkpoint, models, optim
    model = models.build("vgg16", seed=0, width=width).to(device)
    params = list(model.parameters())
    opt = optim.make(params, settings_for(SPEED[-1], 1))
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()  # the momentum buffers exist from the first step on
    payload = {"iteration": 1, "model": model.state_dict(), "optimizer": opt.state(), "metrics": [],
               "rng": torch.get_rng_state(), "train_seconds": 0.0, "eval_seconds": 0.0,
               "device_rng": torch.cuda.get_rng_state(device) if device.startswith("cuda") else torch.empty(0)}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        ckpt = checkpoint.Checkpointing(Path(tmp) / "vgg16.ckpt", every=1, identity="gpu-check")
        writes = []
        for _ in range(reps):
            began = time.perf_counter()
            checkpoint.save(ckpt, payload)
            writes.append(round(time.perf_counter() - began, 4))
        size = ckpt.path.stat().st_size
        began = time.perf_counter()
        if checkpoint.load(ckpt) is None:
            raise RuntimeError("the checkpoint just written does not load")
        read = time.perf_counter() - began
    weights = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    print(f"  VGG-16 checkpoint from {device}: {size / 2**20:.1f} MiB ({weights / 2**20:.1f} MiB of weights), "
          f"write {min(writes):.3f} s (best of {reps}, {size / 2**20 / min(writes):.0f} MiB/s), read {read:.3f} s, "
          f"in {tempfile.gettempdir()}")
    return {"bytes": size, "weights_bytes": weights, "write_seconds": writes, "best_write_seconds": min(writes),
            "read_seconds": round(read, 4), "directory": tempfile.gettempdir()}


@part("checkpoint_cpu", 10)
def checkpoint_cpu(ctx, deadline) -> dict:
    return checkpoint_figures("cpu", 2 if ctx["args"].quick else 3)


@part("checkpoint_gpu", 10, gpu=True)
def checkpoint_gpu(ctx, deadline) -> dict:
    return checkpoint_figures(ctx["gpu"], 2 if ctx["args"].quick else 3, ctx["width"])


# ---------------------------------------------------------------- workers (separate processes)

def worker_bits(args) -> dict:
    """Two runs per model with the same seeds, in a process whose numerics were configured
    before any CUDA work; digest and training seconds of each."""
    import hashlib

    import torch

    from lth.nn import numerics
    from lth.nn.training import train
    torch.set_num_threads(1)
    numerics.configure("fp32", args.deterministic)  # before cuBLAS starts
    out, began, last = {}, time.perf_counter(), 0.0
    for config in (CONFIGS[name] for name in args.models.split(",")):
        if time.perf_counter() - began + 2 * last > args.seconds:  # the next model is no faster
            out[config[0]] = {"skipped": "time budget used up"}
            continue
        runs, started = [], time.perf_counter()
        try:
            for _ in range(2):
                model, data = build(config, args.device, args.width), synthetic(config, args.device, batches=20)
                result = train(model, None, data, settings_for(config, args.iterations))
                digest = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes()
                                                 for v in model.state_dict().values())).hexdigest()
                runs.append((digest, result.train_seconds))
            out[config[0]] = {"identical": runs[0][0] == runs[1][0], "digest": runs[0][0],
                              "iterations": args.iterations, "seconds": round(min(s for _, s in runs), 4)}
        except RuntimeError as exc:  # deterministic mode refusing an operation, or a divergence
            out[config[0]] = {"error": str(numerics.explain(exc) or exc).strip().splitlines()[0]}
        last = time.perf_counter() - started
    return out


def worker_job(args) -> None:
    """A LeNet training process for the concurrency part: warms up, says `ready`, then for
    each `go SECONDS` line trains for that long and answers with its it/s."""
    import torch

    from lth.runtime import lifeline
    from lth.nn import numerics
    from lth.nn.training import train
    torch.set_num_threads(1)
    numerics.configure("fp32", False)
    model, data = build(LENET, args.device), synthetic(LENET, args.device)
    train(model, None, data, settings_for(LENET, 200))
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.startswith("go "):
            return
        count, deadline = [0], time.perf_counter() + float(line.split()[1])

        def stop():
            count[0] += 1
            return "window over" if time.perf_counter() >= deadline else None
        began = time.perf_counter()
        try:
            train(model, None, data, settings_for(LENET, 10**9), stop=stop)
        except lifeline.Orphaned:
            pass
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        print(json.dumps({"iterations": count[0], "seconds": seconds, "it_s": round(count[0] / seconds, 1)}), flush=True)


def worker_fixed(args) -> dict:
    """The phases of a 1-iteration LeNet job in this fresh process."""
    phases, mark = {}, [time.perf_counter()]

    def done(name):
        now = time.perf_counter()
        phases[name] = round(now - mark[0], 4)
        mark[0] = now
    import numpy as np
    import torch

    from lth.nn import data, models, numerics
    from lth.nn.training import prepare, train
    done("import_torch_lth")
    torch.set_num_threads(1)  # a job's default (`threads: 1`)
    numerics.configure("fp32", False)
    torch.zeros(1, device=args.device).sum().item()
    done("device_init")
    model = models.build("lenet_300_100", seed=0).to(args.device)
    done("model_build_and_move")
    rng = np.random.default_rng(0)

    def arrays(n):
        return data.Arrays(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))
    dataset = data.Dataset("synthetic", arrays(60000), arrays(10000), 10)
    done("synthetic_dataset")
    splits = prepare(dataset, 5000, 0, args.device)
    done("data_to_device")
    train(model, None, splits, {**ADAM, "batch_size": 60, "iterations": 1, "eval_every": 1, "seed": 0})
    done("train_1_iteration_with_evaluations")
    return phases


WORKERS = {"bits": worker_bits, "job": worker_job, "fixed": worker_fixed}


# ---------------------------------------------------------------- main

def cuda_state(ctx) -> str | None:
    """None if a CUDA device is usable, else why not."""
    if "torch" not in ctx["have"]:
        return "torch is missing"
    import torch
    if torch.version.cuda is None:
        return f"no CUDA device: torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
    if not torch.cuda.is_available():
        return (f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, CUDA "
                f"{torch.version.cuda}: no driver or no visible GPU)")
    return None


def why_not(ctx, name: str, gpu: bool) -> str | None:
    lacking = [n for n in NEEDS.get(name, ("torch", "numpy")) if n not in ctx["have"]]
    if lacking:
        return f"needs {', '.join(lacking)}, missing (see packages)"
    return ctx["no_cuda"] if gpu else None


def run_part(ctx, name: str, budget: int, gpu: bool, fn) -> dict:
    print(f"\n== {name} (budget {budget} s)", flush=True)
    reason = why_not(ctx, name, gpu)
    began = time.monotonic()
    if reason:
        print(f"  skipped: {reason}")
        return {"status": "skipped", "reason": reason, "budget_s": budget}
    try:
        figures = {"status": "ok", **fn(ctx, began + budget)}  # a part may say "failed" itself
    except Skip as exc:
        figures = {"status": "skipped", "reason": str(exc)}
        print(f"  skipped: {exc}")
    except Exception as exc:  # a part's failure is reported; the next parts still run
        figures = {"status": "failed", "reason": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
        print(f"  FAILED: {figures['reason']}")
    seconds = time.monotonic() - began
    if name == "packages":
        ctx["no_cuda"] = None if ctx["args"].stand_in and "torch" in ctx["have"] else cuda_state(ctx)
        setup_torch(ctx)
    return {**figures, "seconds": round(seconds, 2), "budget_s": budget}


def setup_torch(ctx) -> None:
    """After the package check: 1 thread (the CPU figure's setting), strict float32."""
    if "torch" not in ctx["have"]:
        return
    import torch

    from lth.nn import numerics
    torch.set_num_threads(1)
    numerics.configure("fp32", False)
    ctx["machine"].update(numerics.device_info(ctx["gpu"] if ctx["no_cuda"] is None else "cpu"))


def summary(report: dict) -> None:
    print(f"\n== summary ({report['total_seconds']:.0f} s)")
    for name, figures in report["parts"].items():
        line = f"  {name:16s} {figures['status']:8s} {figures.get('seconds', 0):6.1f} s"
        print(line + (f"  {figures['reason']}" if figures["status"] != "ok" else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"), help="where the figures go")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (about a quarter of the time)")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply every part's time budget (a slow or shared machine; default 1)")
    parser.add_argument("--wheels", help="install missing packages from the wheels in this folder, nowhere else")
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("--deterministic", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="lenet_300_100", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    # testing aid where no GPU exists: the GPU parts run on the CPU with models at 1/8 width;
    # it checks this script's logic, its figures mean nothing
    parser.add_argument("--stand-in", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        figures = WORKERS[args.worker](args)
        if figures is not None:
            print(json.dumps(figures))
        return 0

    began = time.monotonic()
    ctx = {"args": args, "have": set(), "no_cuda": "torch is missing", "parts": {},
           "target_s": 1.5 if args.quick else 5.0,
           "gpu": "cpu" if args.stand_in else "cuda", "width": 0.125 if args.stand_in else 1.0,
           "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}}
    if not args.budget_scale > 0:
        parser.error(f"--budget-scale {args.budget_scale}: give a factor above 0, e.g. 2 on a machine twice as slow")
    print(f"gpu_check: {len(PARTS)} parts, budgets {sum(b for _, b, _, _ in PARTS) * args.budget_scale:g} s in all"
          + (" (--quick)" if args.quick else ""))
    for name, budget, gpu, fn in PARTS:
        ctx["parts"][name] = run_part(ctx, name, round(budget * args.budget_scale, 1), gpu, fn)
    report = {"tool": "tools/gpu_check.py", "quick": args.quick, "machine": ctx["machine"],
              "total_seconds": round(time.monotonic() - began, 1), "parts": ctx["parts"]}
    summary(report)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"figures written to {args.json}")
    return 1 if any(p["status"] == "failed" for p in ctx["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
