"""One module per stage kind: its declaration (lth.plan.registry.StageKind), its planner and
its runner. The registry imports every module here when first read, so a new kind is one
new module. Modules stay torch-free at import (the Snakefile reads them at parse time).

The lottery's chain (init -> train -> prune -> rewind, with the controls beside it) is put
together by lth.plan.chain from the planners of init, train, prune, rewind and the
control kinds; the final (analysis) kinds plan themselves from the whole plan.
"""


def by_training(inputs: dict) -> dict:
    """An analysis's inputs named <train ID>_<what> as {train ID: {what: path}}."""
    out: dict = {}
    for name, path in inputs.items():
        tid, _, what = name.rpartition("_")
        out.setdefault(tid, {})[what] = path
    return out


def log(line: str) -> None:
    """One line of a job's log (snakemake sends a job's stdout to its log file)."""
    print(line, flush=True)
