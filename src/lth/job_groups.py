"""Which stages share one cluster job (Snakemake's `group`), so that a 20-level lottery is not
~80 SLURM submissions each with its own queue wait for ~20 trainings. Torch-free.

Rules, by the stage kinds' resource classes (lth.registry):
- every training-class stage (train, snapshot, interpolate) leads its own job;
- a small stage (init, prune, rewind, reinit, ...) joins the job of the latest training U
  it follows through small stages (every other such training is one U waits for): it runs
  right after U, on U's node (the next level's prune and rewind after a training). It
  could not start before U ends anyway, and it takes seconds.
- a small stage not placed so whose only consumer is one training T joins T's job
  (a control's reinit before its training);
- other small stages are jobs of their own: joining one of several trainings would make
  the others wait for it (e.g. a rewind whose start weights the instability copies share);
- every analysis-class stage joins one final job, ANALYSES (the profile lets that group
  span disconnected stages with `group-components`).
No grouping ever makes one training wait for another, and the groups form no cycle
(tests/test_job_groups.py checks both on every preset's plan). Locally Snakemake ignores
groups.
"""
from __future__ import annotations

from collections import defaultdict

from . import registry

ANALYSES = "analyses"


def dependencies(plan) -> dict[str, set[str]]:
    """Stage ID -> IDs of the stages whose files it reads."""
    producer = {path: stage.id for stage in plan.stages.values() for path in stage.outputs.values()}
    return {sid: {producer[path] for path in stage.inputs.values() if path in producer}
            for sid, stage in plan.stages.items()}


def _topological(deps: dict[str, set[str]]) -> list[str]:
    order, state = [], {}
    for root in deps:
        if root in state:
            continue
        stack = [(root, iter(sorted(deps[root])))]
        state[root] = "open"
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                state[node] = "done"
                order.append(node)
            elif child not in state:
                state[child] = "open"
                stack.append((child, iter(sorted(deps[child]))))
    return order


def assign(plan) -> dict[str, str]:
    """Stage ID -> group name, for every stage of the plan."""
    deps = dependencies(plan)
    kind_class = {sid: registry.get(stage.kind).resources for sid, stage in plan.stages.items()}
    consumers = defaultdict(set)
    for sid, upstream in deps.items():
        for other in upstream:
            consumers[other].add(sid)
    group: dict[str, str] = {}
    trainers: dict[str, frozenset] = {}  # small stage -> trainings above it through small stages
    before: dict[str, frozenset] = {}    # stage -> every training it (transitively) waits for
    order = _topological(deps)
    for sid in order:
        before[sid] = frozenset().union(*({d} | before[d] if kind_class[d] == "train" else before[d]
                                          for d in deps[sid]))
        cls = kind_class[sid]
        if cls == "train":
            group[sid] = f"job-{sid}"
        elif cls == "analysis":
            group[sid] = ANALYSES
        else:
            above = frozenset().union(*({d} if kind_class[d] == "train" else trainers.get(d, frozenset({d}))
                                        for d in deps[sid]))
            trainers[sid] = above
            # the latest of them: the one every other is (transitively) waited for by
            latest = [u for u in above if kind_class.get(u) == "train" and above - {u} <= before[u]]
            if len(latest) == 1:
                group[sid] = group[latest[0]]
    for sid in order[::-1]:
        if sid not in group and kind_class[sid] == "small":
            after = consumers[sid]
            if len(after) == 1 and kind_class[next(iter(after))] == "train":
                group[sid] = group[next(iter(after))]
            else:
                group[sid] = f"job-{sid}"
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
    colour: dict = {}  # depth-first search: a group reached again while open closes a cycle
    for root in set(group.values()) - set(colour):
        stack = [(root, iter(between[root]))]
        colour[root] = "open"
        while stack:
            node, nexts = stack[-1]
            other = next(nexts, None)
            if other is None:
                colour[node] = "done"
                stack.pop()
            elif colour.get(other) == "open":
                raise ValueError(f"cluster groups form a cycle through {node} and {other}")
            elif other not in colour:
                colour[other] = "open"
                stack.append((other, iter(between[other])))
