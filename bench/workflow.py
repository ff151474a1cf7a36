"""Workflow-level figures, from one run of a config in a fresh folder (nothing cached):

- wall time of `snakemake --cores N` against the summed time of all its training jobs (the
  levels' and the instability copies'), measured three ways: the optimisation loop
  (train_seconds), the loop plus evaluation, and each training process's whole in-process
  time (job_seconds: data loading, training, saving); overhead = wall / sum - 1, so it
  includes every other job (pruning, rewinding, analyses, plots) and Snakemake itself;
  (negative when jobs run side by side: with one thread per job on 2 cores, the instability
  copies train beside the pruning chain);
- each rule's jobs' wall times from Snakemake's log (1 s resolution): the fixed cost of a
  job is its wall time minus what the process itself measured;
- bytes written per level (training + pruning + rewinding directories) and in all.

    python bench/workflow.py [--configfile config.yaml] [--cores 2] [--keep DIR]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lth.plan import config as config_mod, build as plan_mod  # noqa: E402
from lth.report import summary


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(config_path: Path, cores: int, workdir: Path) -> dict:
    shutil.copy(config_path, workdir / "config.yaml")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", str(cores)],
                   cwd=workdir, env=env, check=True, capture_output=True)
    return figures(workdir, time.perf_counter() - started)


def figures(workdir: Path, wall: float) -> dict:
    """The figures of a finished run of workdir/config.yaml that took `wall` seconds."""
    cfg = config_mod.load(workdir / "config.yaml")
    plan = plan_mod.build(cfg)
    levels = []
    for level, stages in enumerate(plan.levels):
        stats = json.loads((workdir / stages["train"].output("stats")).read_text())
        levels.append({"level": level, "stats": stats,
                       "bytes": sum(dir_bytes(workdir / s.dir) for s in stages.values())})
    trainings = [json.loads((workdir / s.output("stats")).read_text())
                 for s in plan.stages.values() if s.kind == "train"]
    kinds = sorted({s.kind for s in plan.stages.values()})
    jobs = {kind: sum(s.kind == kind for s in plan.stages.values()) for kind in kinds}
    return {"wall": wall, "levels": levels, "trainings": trainings, "jobs": jobs, "job_walls": job_walls(workdir),
            "bytes_total": dir_bytes(workdir / cfg["results"])}


def job_walls(workdir: Path) -> dict:
    """Rule -> wall seconds of each of its jobs, from the newest Snakemake log in workdir that
    ran jobs (a report or lint run writes a log too)."""
    logs = [log for log in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
            if "Finished jobid" in log.read_text()]
    if not logs:
        return {}
    stamp, started, rule_of, walls = None, {}, {}, {}
    rule = None
    for line in logs[-1].read_text().splitlines():
        if m := re.match(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$", line):
            stamp = datetime.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"(?:local)?rule (\w+):$", line):
            rule = m.group(1)
        elif (m := re.match(r"\s+jobid: (\d+)$", line)) and rule:
            started[m.group(1)], rule_of[m.group(1)], rule = stamp, rule, None
        elif (m := re.match(r"Finished jobid: (\d+)", line)) and m.group(1) in started:
            job = m.group(1)
            walls.setdefault(rule_of[job], []).append((stamp - started[job]).total_seconds())
    return walls


def report(figures: dict) -> None:
    wall, levels, trainings = figures["wall"], figures["levels"], figures["trainings"]
    loop = sum(t["train_seconds"] for t in trainings)
    with_eval = loop + sum(t["eval_seconds"] for t in trainings)
    jobs = sum(t["job_seconds"] for t in trainings)
    counts = ", ".join(f"{kind} {n}" for kind, n in figures["jobs"].items())
    print(f"workflow: {sum(figures['jobs'].values())} stages ({counts}), wall {wall:.1f} s")
    for name, total in (("training loop", loop), ("loop + evaluation", with_eval),
                        ("training jobs in-process", jobs)):
        print(f"  vs {name:26s} {total:7.1f} s  overhead {100 * (wall / total - 1):5.1f} %")
    walls = figures.get("job_walls") or {}
    if walls:
        print("jobs' wall time per rule (Snakemake log, 1 s resolution):")
        for rule, times in walls.items():
            print(f"  {rule:12s} {len(times):3d} jobs  mean {sum(times) / len(times):5.1f} s  total {sum(times):6.1f} s")
        if len(walls.get("train", ())) == len(trainings):  # else a partly cached run: not comparable
            fixed = (sum(walls["train"]) - jobs) / len(walls["train"])
            print(f"  a training job's fixed cost outside its process's own timing: {fixed:.1f} s "
                  "(process start, imports, Snakemake's bookkeeping)")
    print("bytes per level (train + prune + rewind directories):")
    for lv in levels:
        print(f"  level {lv['level']:2d}  {summary.remaining_pct(lv['stats']):5.1f} % weights  {lv['bytes'] / 1e6:6.3f} MB")
    print(f"  all results: {figures['bytes_total'] / 1e6:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configfile", type=Path, default=ROOT / "config.yaml")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    parser.add_argument("--existing", type=Path, help="do not run: report on this finished run folder ...")
    parser.add_argument("--wall", type=float, help="... which took this many seconds (e.g. from `time make run`)")
    args = parser.parse_args()
    if args.existing:
        report(figures(args.existing, args.wall))
    elif args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        report(run(args.configfile.resolve(), args.cores, args.keep))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            report(run(args.configfile.resolve(), args.cores, Path(tmp)))


if __name__ == "__main__":
    main()
