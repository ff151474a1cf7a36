"""Cluster jobs (lth.plan.groups): a lottery level is one job, the final analyses are one,
no training ever waits for another because of grouping, and the jobs form no cycle."""
import collections

import pytest

from conftest import ROOT
from lth.plan import config, groups as job_groups, build as plan, registry

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
        stages = run.levels[level]
        if level in (3, 7):  # the instability copies share this rewind: it is a job of its own
            assert groups[stages["rewind"].id] != groups[stages["train"].id]
            continue
        assert groups[stages["prune"].id] == groups[stages["rewind"].id] == groups[stages["train"].id]
    analyses = {s.kind for s in members[job_groups.ANALYSES]}
    assert analyses == {k.name for k in registry.kinds() if k.resources == "analysis"} & {
        s.kind for s in built.stages.values()}
    # 60 stages; 31 jobs: init, 16 trainings (13 with their prune and rewind), prune and
    # rewind of levels 3 and 7, 6 instability copies, 3 interpolations, the analyses
    assert (len(built.stages), len(members)) == (60, 31)


@pytest.mark.parametrize("preset", [ROOT / "config.yaml", *PRESETS], ids=lambda p: p.stem)
def test_grouping_never_serialises_trainings_nor_risks_a_finished_one(preset):
    """check() raises on a cycle or two trainings in one job. A job's training is its last
    stage (every other member is upstream of it): when a member fails Snakemake deletes the
    outputs of the whole group, which must never include a finished training. And whatever
    else waits for a member waited for that training anyway, or is an analysis."""
    built = plan.build(config.load([ROOT / "config.yaml", preset]))
    groups, members = jobs_of(built)
    deps = job_groups.dependencies(built)
    ancestors = {}

    def above(sid):
        if sid not in ancestors:
            ancestors[sid] = set().union(*({d} | above(d) for d in deps[sid]))
        return ancestors[sid]
    consumers = collections.defaultdict(set)
    for sid, upstream in deps.items():
        for other in upstream:
            consumers[other].add(sid)
    for name, stages in members.items():
        trainings = [s for s in stages if registry.get(s.kind).resources == "train"]
        if not trainings:
            continue
        (training,) = trainings
        for stage in stages:
            if stage.id == training.id:
                continue
            assert stage.id in above(training.id), (name, stage.kind)
            for consumer in consumers[stage.id]:
                kind = registry.get(built.stages[consumer].kind).resources
                assert (kind == "analysis" or groups[consumer] == name or consumer == training.id
                        or training.id in above(consumer)), (stage.kind, built.stages[consumer].kind)
    assert len(members) < len(built.stages)


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
