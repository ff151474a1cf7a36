"""Speed benchmark: `python bench/speed.py [--section NAME ...]`.

Sections: matmul (1-thread ceiling), train (LeNet it/s), flops (the FLOP rate that implies,
against the ceiling), telemetry (LeNet it/s with telemetry off and on at the default interval,
interleaved; the cost per point and of the final-distance pass), step (the step's own matrix
multiplications at LeNet's shapes, timed alone: the floor of a step, and the loop's share of
it, next to the 4096^2 ceiling), workflow (the default workflow's wall time against its
training time, and bytes written per level; see bench/workflow.py, which also runs on its own).

Before/after another commit (e.g. the training loop with telemetry off against the tree
before it): bench/before_after.sh alternates this file's train section in both trees.

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
import tempfile
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


def state(model) -> dict:
    """The prunable weights as numpy arrays (as lth.store.weights loads a start or origin)."""
    return {n: model.get_parameter(n).detach().numpy().copy() for n in model.prunable()}


INTERVALS = (100, 200, 250, 300, 400, 500, 600, 800, 1000, 1500, 2000, 2500, 3000, 5000)


@section("telemetry")
def telemetry(ctx, args) -> dict:
    """LeNet-300-100 dense, telemetry off and on at the schema's default settings (or
    --telemetry KEY=VALUE), runs alternating off/on so that both see the same noise. "on" is
    the wall time of the steps and the telemetry points (train_seconds + telemetry_seconds);
    the final-distance pass (Watch.finish, after the loop) is timed apart. On a loaded
    machine wall time mostly measures the neighbours, so the CPU time of this process
    (time.process_time) is reported too: of the steps alone (a run minus a 1-iteration run,
    which makes the same evaluations) and of the telemetry (a run with it minus one without);
    the projections onto other training lengths use that CPU-time ratio."""
    from lth.nn import telemetry as tm
    from lth.plan import config
    from lth.plan.steps import Step, epoch_steps

    data_splits, source = splits(args)
    settings = dict(TRAIN, iterations=args.iterations)
    watch_settings = dict(config.defaults()["telemetry"])
    for item in args.telemetry or ():
        key, value = item.split("=", 1)
        watch_settings[key] = int(value) if key in ("examples", "weights", "seed") else value
    per_epoch = epoch_steps(len(data_splits["train"]), TRAIN["batch_size"])
    point_list = tm.points(watch_settings, 0, args.iterations, per_epoch)
    shown = {k: v for k, v in watch_settings.items() if k != "levels"}
    print(f"{MODEL}, {source}, dense, {args.iterations} it, {args.repeats} runs off and on alternating, 1 thread; "
          f"telemetry {shown}: {len(point_list)} points")

    def run(iterations, watched):
        model = models.build(MODEL, seed=0)
        watch = None
        if watched:
            weights = state(model)
            watch = tm.Watch(model, model.prunable(), None, weights, weights, watch_settings, data_splits,
                             point_list, Path(tmp) / "bench.telemetry")
        cpu = time.process_time()
        result = training.train(model, None, data_splits, dict(settings, iterations=iterations), watch=watch)
        return result, time.process_time() - cpu, watch

    off, on, on_steps, per_point, finish, cpu_off, cpu_on, cpu_evals = [], [], [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            cpu_evals.append(run(1, False)[1])
            result, cpu, _ = run(args.iterations, False)
            off.append(result.train_seconds)
            cpu_off.append(cpu)
            result, cpu, watch = run(args.iterations, True)
            on.append(result.train_seconds + result.telemetry_seconds)
            on_steps.append(result.train_seconds)
            per_point.append(result.telemetry_seconds / watch.count)
            cpu_on.append(cpu)
            began = time.perf_counter()
            watch.finish()
            finish.append(time.perf_counter() - began)
    it_off, it_on = [args.iterations / s for s in off], [args.iterations / s for s in on]
    it_on_steps = [args.iterations / s for s in on_steps]
    slow_best = 100 * (max(it_off) / max(it_on) - 1)
    slow_median = 100 * (np.median(it_off) / np.median(it_on) - 1)
    point = min(per_point)
    print(f"  off  best {max(it_off):7.1f} it/s  median {np.median(it_off):7.1f} it/s  "
          f"train_seconds {', '.join(f'{s:.3f}' for s in off)}")
    print(f"  on   best {max(it_on):7.1f} it/s  median {np.median(it_on):7.1f} it/s  "
          f"train+telemetry seconds {', '.join(f'{s:.3f}' for s in on)}")
    print(f"  on, its steps alone (train_seconds): best {max(it_on_steps):7.1f} it/s  "
          f"median {np.median(it_on_steps):7.1f} it/s")
    print(f"  slowdown with telemetry (wall): best {slow_best:+.1f}%  median {slow_median:+.1f}%  (target <= 5%)")
    print(f"  telemetry per point (wall): best {1e3 * point:.2f} ms  median {1e3 * np.median(per_point):.2f} ms "
          f"= {point * max(it_off):.1f} steps' time at the best off rate; {len(point_list)} points")
    steps_cpu = min(cpu_off) - min(cpu_evals)
    telemetry_cpu = min(cpu_on) - min(cpu_off)
    ratio = telemetry_cpu / len(point_list) / (steps_cpu / args.iterations)  # steps' CPU time per point
    print(f"  CPU time (best of {args.repeats}): steps {steps_cpu:.3f} s = {1e3 * steps_cpu / args.iterations:.3f} "
          f"ms/step ({args.iterations / steps_cpu:.1f} it/s); telemetry {telemetry_cpu:.3f} s = "
          f"{1e3 * telemetry_cpu / len(point_list):.2f} ms/point = {ratio:.1f} steps; slowdown "
          f"{100 * telemetry_cpu / steps_cpu:+.1f}%")
    # that CPU cost per point projected onto other training lengths, and the smallest regular
    # interval (early phase as set) that keeps the projection within 5%
    for total in sorted({args.iterations, 10000, 50000}):
        def projected(every):
            count = len(tm.points(dict(watch_settings, every=every), 0, total, per_epoch))
            return count, 100 * count * ratio / total
        count, pct = projected(watch_settings["every"])
        fits = next((f"{e}it" for e in INTERVALS if e <= total and projected(f"{e}it")[1] <= 5), None)
        early = Step.parse(watch_settings["early_until"]).iterations(per_epoch)
        print(f"  {total:6d} it: {count:4d} points at these settings -> {pct:5.1f}% projected; smallest interval "
              f"within 5%: {fits or f'none (the early phase to {early}it alone exceeds it)'}")
    print(f"  final-distance pass (Watch.finish, {len(point_list)} points): best {1e3 * min(finish):.1f} ms  "
          f"median {1e3 * np.median(finish):.1f} ms")
    return {"points": len(point_list), "off_seconds": off, "on_seconds": on, "on_train_seconds": on_steps,
            "it_s_off": max(it_off), "it_s_off_median": float(np.median(it_off)),
            "it_s_on": max(it_on), "it_s_on_median": float(np.median(it_on)),
            "slowdown_pct": slow_best, "slowdown_pct_median": slow_median,
            "seconds_per_point": per_point, "finish_seconds": finish,
            "cpu_seconds": {"evaluations": cpu_evals, "off": cpu_off, "on": cpu_on},
            "cpu_steps_per_point": ratio, "cpu_slowdown_pct": 100 * telemetry_cpu / steps_cpu}


@section("step", needs=("matmul", "train"))
def step(ctx, args) -> dict:
    """The step's own matrix multiplications, alone, at LeNet-300-100's shapes for batch 60,
    as autograd calls them (torch.profiler): forward addmm(b, x, W^T) per layer; backward
    mm(g^T, x) for each weight gradient and mm(g, W) for the input gradients of layers 2
    and 3 (the data needs none). Preallocated outputs; best of --step-reps."""
    batch = TRAIN["batch_size"]
    model = models.build(MODEL, seed=0)
    weights = [model.get_parameter(n).detach() for n in model.prunable()]
    biases = [model.get_parameter(n.replace(".weight", ".bias")).detach() for n in model.prunable()]
    g = torch.Generator().manual_seed(0)
    acts = [torch.randn(batch, weights[0].shape[1], generator=g)]  # layer inputs
    for w in weights:
        acts.append(torch.randn(batch, w.shape[0], generator=g))
    grads = [torch.randn(batch, w.shape[0], generator=g) for w in weights]  # d loss / d layer output
    w_grads = [torch.empty_like(w) for w in weights]
    in_grads = [None] + [torch.empty(batch, w.shape[1]) for w in weights[1:]]

    def one_step():
        for i, (w, b) in enumerate(zip(weights, biases)):
            torch.addmm(b, acts[i], w.t(), out=acts[i + 1])
        for i in reversed(range(len(weights))):
            if i > 0:
                torch.mm(grads[i], weights[i], out=in_grads[i])
            torch.mm(grads[i].t(), acts[i], out=w_grads[i])

    inner = 100

    def steps():
        for _ in range(inner):
            one_step()
    seconds = best_seconds(steps, args.step_reps) / inner
    flop = sum(2 * batch * w.numel() for w in weights) * 2 + sum(2 * batch * w.numel() for w in weights[1:])
    gflops, ceiling = flop / seconds / 1e9, ctx["matmul"]["gflops"]
    figures = {"matmul_ms": 1e3 * seconds, "matmul_mflop": flop / 1e6, "gflops": gflops,
               "it_s_ceiling": 1 / seconds}
    print(f"step's matmuls alone ({len(weights)} addmm forward, {len(weights)} weight- and {len(weights) - 1} "
          f"input-gradient mm), batch {batch}, 1 thread, best of {args.step_reps} x {inner}: "
          f"{1e3 * seconds:.3f} ms/step = {1 / seconds:.0f} it/s ceiling; {flop / 1e6:.1f} MFLOP "
          f"at {gflops:.1f} GFLOP/s = {100 * gflops / ceiling:.0f}% of the {ceiling:.1f} GFLOP/s "
          f"{ctx['matmul']['size']}^2 ceiling")
    for name in ("dense", "mask50"):
        r = ctx["train"][name]
        for label, rate in (("best", r["it_s"]), ("median", r["it_s_median"])):
            share = 1 - seconds * rate
            figures.setdefault(name, {})[label] = {"it_s": rate, "step_ms": 1e3 / rate, "loop_share": share}
        best = figures[name]["best"]
        print(f"  {name:7s} measured {best['it_s']:7.1f} it/s = {best['step_ms']:.3f} ms/step: matmuls "
              f"{100 * (1 - best['loop_share']):.0f}%, the loop's share of the step {100 * best['loop_share']:.0f}% "
              f"(median run: {100 * figures[name]['median']['loop_share']:.0f}%)")
    if "telemetry" in ctx:  # its CPU time of the dense steps: less at the mercy of a loaded machine
        t = ctx["telemetry"]
        cpu_step = (min(t["cpu_seconds"]["off"]) - min(t["cpu_seconds"]["evaluations"])) / args.iterations
        figures["dense_cpu"] = {"step_ms": 1e3 * cpu_step, "loop_share": 1 - seconds / cpu_step}
        print(f"  dense   CPU time {1e3 * cpu_step:.3f} ms/step ({1 / cpu_step:.1f} it/s, telemetry section): "
              f"matmuls {100 * seconds / cpu_step:.0f}%, the loop's share of the step {100 * (1 - seconds / cpu_step):.0f}%")
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
    parser.add_argument("--step-reps", type=int, default=20, help="the step section's reps (of 100 steps each)")
    parser.add_argument("--telemetry", action="append", metavar="KEY=VALUE",
                        help="the telemetry section's settings over the schema's defaults, e.g. every=500it")
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
