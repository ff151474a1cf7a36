#!/usr/bin/env bash
# Before/after of the training loop against another commit: that commit's bench/speed.py
# with its own src/ and this tree's, each in a fresh process, alternating ROUNDS times so
# that both see the same machine noise. Figures are printed, never asserted.
#
#   bench/before_after.sh COMMIT [ROUNDS] [speed.py args ...]
#   bench/before_after.sh 3f8ae5d 3          # issue 20: the tree before telemetry
#
# Default speed.py args: --section train --iterations 3000 --repeats 3 (later ones win).
# COMMIT is checked out read-only in a temporary git worktree, removed at the end.
set -euo pipefail
commit=${1:?usage: bench/before_after.sh COMMIT [ROUNDS] [speed.py args ...]}
rounds=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
tree=$(mktemp -d /tmp/lth_before.XXXXXX)
out=$(mktemp -d /tmp/lth_before_after.XXXXXX)
trap 'git -C "$root" worktree remove --force "$tree"; rm -rf "$out"' EXIT
git -C "$root" worktree add --detach "$tree" "$commit" >/dev/null 2>&1
args=(--section train --iterations 3000 --repeats 3 "$@")
for side in before after; do
  src=$([ $side = before ] && echo "$tree/src" || echo "$root/src")
  echo "$side: $(git -C "$([ $side = before ] && echo "$tree" || echo "$root")" log -1 --format='%h %s' | cut -c1-80)" \
       "(lth from $(PYTHONPATH=$src "$python" -c 'import lth; print(lth.__file__)'))"
done
for round in $(seq "$rounds"); do
  echo "-- round $round/$rounds, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  PYTHONPATH=$tree/src "$python" "$tree/bench/speed.py" "${args[@]}" --json "$out/before_$round.json" \
    | grep -E '^  [a-z0-9]+ +best' | sed 's/^/  before/'
  PYTHONPATH=$root/src "$python" "$root/bench/speed.py" "${args[@]}" --json "$out/after_$round.json" \
    | grep -E '^  [a-z0-9]+ +best' | sed 's/^/  after /'
done
"$python" - "$out" "$rounds" <<'PY'
import json, sys
from pathlib import Path
import numpy as np
out, rounds = Path(sys.argv[1]), int(sys.argv[2])
runs = {}
for side in ("before", "after"):
    for r in range(1, rounds + 1):
        train = json.loads((out / f"{side}_{r}.json").read_text())["train"]
        iterations = None
        for variant, fig in train.items():
            rates = [fig["it_s"] * min(fig["train_seconds"]) / s for s in fig["train_seconds"]]
            runs.setdefault(variant, {}).setdefault(side, []).extend(rates)
print(f"all runs ({rounds} rounds): it/s best and median, after/before")
for variant, sides in runs.items():
    b, a = np.array(sides["before"]), np.array(sides["after"])
    print(f"  {variant:7s} before best {b.max():7.1f} median {np.median(b):7.1f} | after best {a.max():7.1f} "
          f"median {np.median(a):7.1f} | after/before best {a.max() / b.max():.3f} median {np.median(a) / np.median(b):.3f}")
PY
