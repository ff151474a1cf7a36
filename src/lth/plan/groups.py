"""Which stages share one cluster job (Snakemake's `group`), so that a 20-level lottery is not
~65 SLURM submissions each with its own queue wait for ~21 trainings. Torch-free.

Rules, by the stage kinds' resource classes (lth.plan.registry):
- every training-class stage (train, snapshot, interpolate) leads its own job;
- a small stage (prune, rewind, reinit, randmask, ...) runs in the job of the first
  training T its outputs lead to (through small stages), before T, when every other
  training they lead to waits for T anyway: a level's prune, rewind and training are one
  job (the next level's prune reads this level's mask, but also this level's training).
  T needs them, and they take seconds. Analyses reading a small stage's files (anatomy
  reads masks) do not count: they run last.
- a small stage leading to trainings that do not wait for one another (a prune whose mask
  the ticket and its random-reinit control both use, a rewind shared with instability
  copies, init) is a job of its own: joining one would make the others wait for it;
- every analysis-class stage joins one final job, ANALYSES (the profile lets that group
  span disconnected stages with `group-components`).
Why before T and not after the training it follows: when any member of a group job fails,
Snakemake deletes the outputs of every member. A failed prune grouped after a finished
12-hour training would delete that training; grouped before its own training, a failure
costs only the seconds-long stages (and the training's checkpoint survives: it is not an
output). No grouping ever makes one training wait for another, and the groups form no cycle
(tests/test_job_groups.py checks both on every preset's plan). Locally Snakemake ignores
groups.
"""
from __future__ import annotations

from collections import defaultdict
from graphlib import CycleError, TopologicalSorter

from lth.plan import registry

ANALYSES = "analyses"


def dependencies(plan) -> dict[str, set[str]]:
    """Stage ID -> IDs of the stages it reads, as the plan recorded them (`upstream`: the
    direct ones; what a training reads through its rewind, the rewind reads itself)."""
    return {sid: set(stage.upstream.values()) for sid, stage in plan.stages.items()}


def _topological(deps: dict[str, set[str]]) -> list[str]:
    """Nodes after everything they depend on; ValueError on a cycle."""
    try:
        return list(TopologicalSorter(deps).static_order())
    except CycleError as exc:
        raise ValueError(f"cycle through {' and '.join(exc.args[1][:2])}") from None


def assign(plan) -> dict[str, str]:
    """Stage ID -> group name, for every stage of the plan."""
    deps = dependencies(plan)
    kind_class = {sid: registry.get(stage.kind).resources for sid, stage in plan.stages.items()}
    consumers = defaultdict(set)
    for sid, upstream in deps.items():
        for other in upstream:
            consumers[other].add(sid)
    order = _topological(deps)
    before: dict[str, frozenset] = {}  # stage -> every training it (transitively) waits for
    for sid in order:
        before[sid] = frozenset().union(*({d} | before[d] if kind_class[d] == "train" else before[d]
                                          for d in deps[sid]))
    group: dict[str, str] = {}
    below: dict[str, frozenset] = {}  # small stage -> the first trainings on its paths down
    for sid in order[::-1]:  # consumers first
        cls = kind_class[sid]
        if cls == "train":
            group[sid] = f"job-{sid}"
        elif cls == "analysis":
            group[sid] = ANALYSES
        else:
            below[sid] = frozenset().union(*({c} if kind_class[c] == "train" else below.get(c, frozenset())
                                             for c in consumers[sid]))
    for sid, trainings in below.items():  # the trainings have their names now
        # the one every other waits for: joining its job delays none of them
        first = [t for t in trainings if all(t in before[other] for other in trainings - {t})]
        group[sid] = group[first[0]] if len(first) == 1 else f"job-{sid}"
    return group


def check(plan, group: dict[str, str]) -> None:
    """Raise ValueError if two trainings share a job or the jobs' graph has a cycle."""
    deps = dependencies(plan)
    trainings = defaultdict(list)
    for sid, stage in plan.stages.items():
        if registry.get(stage.kind).resources == "train":
            trainings[group[sid]].append(sid)
    shared = {name: ids for name, ids in trainings.items() if len(ids) > 1}
    if shared:
        raise ValueError(f"trainings share a cluster job: {shared}")
    between = defaultdict(set)
    for sid, upstream in deps.items():
        between[group[sid]] |= {group[other] for other in upstream if group[other] != group[sid]}
    try:
        _topological({name: between[name] for name in set(group.values())})
    except ValueError as exc:
        raise ValueError(f"cluster groups form a {exc}") from None
