"""Speed benchmark: `python bench/speed.py [--section NAME ...]`.

Sections: matmul (1-thread ceiling), train (LeNet it/s), flops (the FLOP rate that implies,
against the ceiling), workflow (the default workflow's wall time against its training time,
and bytes written per level; see bench/workflow.py, which also runs on its own).

All figures come from one process, so the ratios between them (training FLOP rate vs the
1-thread matmul ceiling) hold even on a shared, noisy machine; absolute numbers vary run
to run. Timings are printed, never asserted.

Sections are functions in SECTIONS, run in order, each at most once per process: its
result dict is cached in ctx[name] (and written to --json). Adding a section: write
`@section("name", needs=("train",)) def name(ctx, args): ...` that prints its lines and
returns a dict of figures; the sections it needs run before it and their figures are in ctx.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

try:
    import lth  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import numpy as np
import torch

from lth.nn import data, models, training

MODEL = "lenet_300_100"
TRAIN = {"optimizer": "adam", "lr": 1.2e-3, "momentum": 0.0, "weight_decay": 0.0,
         "batch_size": 60, "eval_every": 10**9, "seed": 0}  # eval only at the end: not timed

SECTIONS: dict = {}


def section(name: str, needs: tuple = ()):
    def register(fn):
        SECTIONS[name] = (fn, needs)
        return fn
    return register


def need(ctx: dict, name: str) -> dict:
    """The figures of section `name`, running it (after those it needs) if not yet run."""
    if name not in ctx:
        fn, needs = SECTIONS[name]
        for other in needs:
            need(ctx, other)
        print(f"\n== {name}")
        ctx[name] = fn(ctx, ctx["args"]) or {}
    return ctx[name]


def best_seconds(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# ---------------------------------------------------------------- sections

@section("matmul")
def matmul(ctx, args) -> dict:
    """Ceiling: float32 GFLOP/s of one large square matmul on 1 thread."""
    n = args.matmul_size
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    seconds = best_seconds(lambda: torch.mm(a, b, out=out), args.matmul_reps)
    gflops = 2 * n ** 3 / seconds / 1e9
    print(f"float32 matmul {n}x{n}, 1 thread, best of {args.matmul_reps}: {gflops:.1f} GFLOP/s")
    return {"size": n, "seconds": seconds, "gflops": gflops}


def step_flops(model, batch: int) -> dict:
    """FLOPs of one training step of a stack of Linear layers, counted honestly:
    forward 2*P*B (multiply-adds of the weights) + B per bias; backward 4*P*B (grad of
    weights and of inputs) + B per bias, minus the first layer's input gradient (2*in*out*B),
    which is never computed because the data needs no gradient."""
    weights = [model.get_parameter(n) for n in model.prunable()]
    p = sum(w.numel() for w in weights)
    biases = sum(b.numel() for n, b in model.named_parameters() if n.endswith(".bias"))
    forward = 2 * p * batch + biases * batch
    backward = 4 * p * batch - 2 * weights[0].numel() * batch + biases * batch
    return {"weights": p, "forward": forward, "backward": backward, "total": forward + backward}


def splits(args) -> tuple[dict, str]:
    """Fashion-MNIST as prepared for training if it is installed, else random data of its shape."""
    if not args.synthetic and Path(data.source("fashion_mnist").default_dir).is_dir():
        dataset = data.load("fashion_mnist")
        return training.prepare(dataset, validation_size=5000, split_seed=0), "Fashion-MNIST"
    g = torch.Generator().manual_seed(0)

    def split(n):
        return training.Split(torch.randn(n, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))
    return {"train": split(55000), "validation": split(1000), "test": split(1000)}, "synthetic 55000x28x28"


def half_mask(model) -> dict:
    rng = np.random.default_rng(0)
    return {n: rng.random(tuple(model.get_parameter(n).shape)) < 0.5 for n in model.prunable()}


@section("train")
def train(ctx, args) -> dict:
    """lth.nn.training.train on LeNet-300-100, batch 60, Adam, 1 thread: dense, 50% masked, and
    dense with random crops and flips (the augmentation path: an epoch's draws at once)."""
    data_splits, source = splits(args)
    settings = dict(TRAIN, iterations=args.iterations)
    print(f"{MODEL}, {source}, batch {TRAIN['batch_size']}, adam, {args.iterations} it "
          f"x {args.repeats} runs each, 1 thread (train_seconds from training.Result)")
    figures = {}
    for name, masked, augment in (("dense", False, False), ("mask50", True, False), ("augment", False, True)):
        runs = []
        for _ in range(args.repeats):
            model = models.build(MODEL, seed=0)
            result = training.train(model, half_mask(model) if masked else None, data_splits,
                                    dict(settings, augment=augment))
            runs.append(result.train_seconds)
        it_s = [args.iterations / s for s in runs]
        figures[name] = {"train_seconds": runs, "it_s": max(it_s), "it_s_median": float(np.median(it_s))}
        print(f"  {name:7s} best {max(it_s):7.1f} it/s  median {np.median(it_s):7.1f} it/s  "
              f"train_seconds {', '.join(f'{s:.3f}' for s in runs)}")
    return figures


@section("flops", needs=("matmul", "train"))
def flops(ctx, args) -> dict:
    """Training FLOP rate vs the matmul ceiling, both measured in this run (no figure from
    another day or machine is compared with)."""
    ceiling, rates = ctx["matmul"]["gflops"], ctx["train"]
    count = step_flops(models.build(MODEL), TRAIN["batch_size"])
    print(f"{count['total'] / 1e6:.2f} MFLOP per step (P={count['weights']:,} weights, "
          f"B={TRAIN['batch_size']}: forward {count['forward'] / 1e6:.2f}, backward {count['backward'] / 1e6:.2f})")
    figures = {"mflop_per_step": count["total"] / 1e6}
    for name, r in rates.items():
        gflops = r["it_s"] * count["total"] / 1e9
        figures[name] = {"gflops": gflops, "of_ceiling": gflops / ceiling}
        print(f"  {name:7s} {gflops:6.1f} GFLOP/s = {100 * gflops / ceiling:5.1f}% of the {ceiling:.1f} GFLOP/s "
              f"matmul ceiling measured above (target >= 60%)")
    return figures


@section("workflow")
def workflow(ctx, args) -> dict:
    """The default workflow in a fresh folder: wall vs training time, bytes per level."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import workflow as workflow_bench
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        figures = workflow_bench.run(Path(args.configfile).resolve(), args.cores, Path(tmp))
    workflow_bench.report(figures)
    return figures


# ---------------------------------------------------------------- main

def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", action="append", choices=list(SECTIONS),
                        help="run only these (repeatable; those they need run too); default: all")
    parser.add_argument("--iterations", type=int, default=3000, help="training steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="training runs per configuration (best is used)")
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--matmul-reps", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="random data even if Fashion-MNIST is installed")
    parser.add_argument("--configfile", default=str(Path(__file__).resolve().parent.parent / "config.yaml"),
                        help="the workflow section's config")
    parser.add_argument("--cores", type=int, default=2, help="the workflow section's --cores")
    parser.add_argument("--json", type=Path, help="also write all figures here")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, 1 thread, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ctx = {"args": args}
    for name in args.section or SECTIONS:
        need(ctx, name)
    figures = {k: v for k, v in ctx.items() if k != "args"}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
