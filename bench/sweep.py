"""Workflow figures at sweep scale (prints numbers; asserts nothing).

    python bench/sweep.py dry        # the 4,000-job sweep: dry-run wall time, jobs, longest command
    python bench/sweep.py dry --seeds 7   # the same with init.seed 0..6 (issue 19: 9,251 jobs at 8b48797)
    python bench/sweep.py noop DIR   # a ~300-stage workflow, trained for real in DIR (5 iterations
                                     # per training), then `snakemake -n` on it, finished, timed

The sweep is issue 11's: 3 init seeds x 3 learning rates x 2 rewind points x 20 levels with
the three controls and instability at 3 levels (ticket and both random controls).
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SWEEP = {"levels": 20, "init": {"seed": [0, 1, 2]}, "train": {"lr": [0.0003, 0.0012, 0.005]},
         "rewind": {"to": ["reset", "500it"]},
         "controls": {"random_reinit": True, "random_prune": True, "small_dense": True},
         "instability": {"levels": [0, 5, 10], "pairs": 1, "variants": ["ticket", "random_reinit", "random_prune"]}}
NOOP = {"levels": 18, "threads": 1, "init": {"seed": [0, 1]},
        "data": {"validation_size": 1000},
        "train": {"iterations": "5it", "eval_every": "5it"},
        "controls": {"random_reinit": True, "random_prune": True},
        "instability": {"levels": [0, 5, 10], "pairs": 1}}


def snakemake(workdir: Path, *args) -> tuple[float, str]:
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2", *args],
                          cwd=workdir, capture_output=True, text=True)
    took = time.perf_counter() - began
    if proc.returncode:
        sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
    return took, proc.stdout + proc.stderr


def dry(seeds: int = 3) -> None:
    sweep = {**SWEEP, "init": {"seed": list(range(seeds))}}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(sweep))
        for attempt in (1, 2):
            took, output = snakemake(Path(tmp), "-n", "-p")
            commands = [line for line in output.splitlines() if line.startswith("Shell command: ")]
            total = int(re.search(r"^total\s+(\d+)", output, re.M).group(1))
            longest = max(commands, key=len)
            print(f"sweep ({seeds} init seeds) dry run {attempt}: {total} jobs in {took:.2f} s ({1000 * took / total:.1f} ms/job); "
                  f"longest command {len(longest) - len('Shell command: ')} characters")
        print(f"  e.g. {longest[len('Shell command: '):]}")


def noop(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(NOOP))
    took, output = snakemake(directory)
    done = len(re.findall(r"Finished jobid: \d+ \(Rule: (?!all)", output))
    print(f"workflow of {done} stages run in {took:.0f} s")
    for attempt in (1, 2, 3):
        took, output = snakemake(directory, "-n")
        assert "Nothing to be done" in output, output[-2000:]
        print(f"no-op dry run {attempt} of the finished workflow: {took:.2f} s")
    took, output = snakemake(directory)
    print(f"no-op real run: {took:.2f} s ({'nothing to be done' if 'Nothing to be done' in output else 'ran jobs!'})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["dry"] and len(sys.argv) == 2:
        dry()
    elif sys.argv[1:3] == ["dry", "--seeds"] and len(sys.argv) == 4 and sys.argv[3].isdigit():
        dry(int(sys.argv[3]))
    elif sys.argv[1:2] == ["noop"] and len(sys.argv) == 3:
        noop(Path(sys.argv[2]))
    else:
        sys.exit(__doc__)
