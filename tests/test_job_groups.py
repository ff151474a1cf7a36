"""Cluster jobs (lth.job_groups): a lottery level is one job, the final analyses are one,
no training ever waits for another because of grouping, and the jobs form no cycle."""
import collections

import pytest

from conftest import ROOT
from lth import config, job_groups, plan, registry

PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def jobs_of(built):
    groups = job_groups.assign(built)
    job_groups.check(built, groups)
    members = collections.defaultdict(list)
    for sid, name in groups.items():
        members[name].append(built.stages[sid])
    return groups, members


def test_the_default_lottery_is_one_job_per_level_and_one_for_the_analyses():
    # the ticket's lottery of config.yaml (its control and landscape add jobs of their own)
    built = plan.build(config.load([ROOT / "config.yaml"], {"controls": {"random_reinit": False},
                                                            "landscape": {"levels": []}}))
    groups, members = jobs_of(built)
    run = built.runs[0]
    for level in range(1, len(run.levels)):
        before = run.levels[level - 1]["train"]
        assert groups[run.levels[level]["prune"].id] == groups[run.levels[level]["rewind"].id] == groups[before.id]
    analyses = {s.kind for s in members[job_groups.ANALYSES]}
    assert analyses == {k.name for k in registry.kinds() if k.resources == "analysis"} & {
        s.kind for s in built.stages.values()}
    # 39 stages; 20 jobs: init, 9 level jobs, 6 instability copies, 3 interpolations, analyses
    assert (len(built.stages), len(members)) == (39, 20)


@pytest.mark.parametrize("preset", [ROOT / "config.yaml", *PRESETS], ids=lambda p: p.stem)
def test_grouping_never_serialises_trainings_nor_makes_a_cycle(preset):
    """check() raises on a cycle or two trainings in one job; and a small stage only ever
    joins a training that it must wait for anyway (or that waits for it alone)."""
    built = plan.build(config.load([ROOT / "config.yaml", preset]))
    groups, members = jobs_of(built)
    deps = job_groups.dependencies(built)

    def waits_for(sid, seen=None):
        seen = set() if seen is None else seen
        for other in deps[sid] - seen:
            seen.add(other)
            waits_for(other, seen)
        return seen
    for name, stages in members.items():
        trainings = [s for s in stages if registry.get(s.kind).resources == "train"]
        for stage in stages:
            if registry.get(stage.kind).resources == "small" and trainings:
                (training,) = trainings
                assert training.id in waits_for(stage.id) or waits_for(training.id) >= {stage.id}
    assert len(members) < len(built.stages) or len(built.stages) < 4


def test_two_trainings_in_one_job_or_a_cycle_are_refused():
    built = plan.build(config.load([ROOT / "config.yaml"]))
    run = built.runs[0]
    groups = job_groups.assign(built)
    groups[run.levels[1]["train"].id] = groups[run.levels[3]["train"].id]
    with pytest.raises(ValueError, match="trainings share a cluster job"):
        job_groups.check(built, groups)
    # level 2's prune (it reads level 1's training) in level 0's job, which level 1 waits for
    groups = job_groups.assign(built)
    groups[run.levels[2]["prune"].id] = groups[run.levels[0]["train"].id]
    with pytest.raises(ValueError, match="cycle"):
        job_groups.check(built, groups)
