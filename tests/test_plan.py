import copy

import pytest

from lth import config, plan


def build(**overrides):
    return plan.build(config.validate(config.merge({"levels": 3}, overrides)))


def ids(p: plan.Plan) -> dict:
    out = {"init": p.levels[0]["train"].upstream["start"]}
    for level, stages in enumerate(p.levels):
        for kind, stage in stages.items():
            out[f"{kind}{level}"] = stage.id
    return out


# Regression pins: a change here means every existing results folder is orphaned. Only
# change them on purpose (and say so in the changelog).
PINNED_DEFAULTS_LEVELS_3 = {
    "init": "b443801789b4", "train0": "6b0e8943e360",
    "prune1": "702f99acbd29", "rewind1": "8a86b7edebf4", "train1": "263c32b961c0",
    "train3": "cdf7221b5323",
}


def test_pinned_ids_of_the_default_config():
    got = ids(build())
    assert {k: got[k] for k in PINNED_DEFAULTS_LEVELS_3} == PINNED_DEFAULTS_LEVELS_3


def test_ids_are_pure_functions_of_the_config():
    assert ids(build()) == ids(build())
    assert ids(build(results="elsewhere", threads=7, data_dir="/x")) == ids(build())


def test_writing_a_default_explicitly_keeps_ids():
    assert ids(build(train={"lr": 0.0012}, prune={"rate": 0.2})) == ids(build())


def test_a_new_setting_with_a_default_keeps_old_ids():
    schema = config.load_schema()
    before = ids(plan.build(config.validate({"levels": 3}, schema), schema))
    extended = copy.deepcopy(schema)
    extended["properties"]["train"]["properties"]["label_smoothing"] = {"type": "number", "default": 0.0}
    after = ids(plan.build(config.validate({"levels": 3}, extended), extended))
    assert before == after


def test_pruning_edit_keeps_init_and_dense_training():
    a, b = ids(build()), ids(build(prune={"rate": 0.3}))
    assert a["init"] == b["init"] and a["train0"] == b["train0"]
    for level in (1, 2, 3):
        assert a[f"prune{level}"] != b[f"prune{level}"]
        assert a[f"rewind{level}"] != b[f"rewind{level}"]
        assert a[f"train{level}"] != b[f"train{level}"]


def test_training_edit_reruns_training_and_everything_after_but_not_init():
    a, b = ids(build()), ids(build(train={"lr": 0.001}))
    assert a["init"] == b["init"]
    assert all(a[k] != b[k] for k in a if k != "init")


def test_more_levels_keep_the_existing_levels():
    a, b = ids(build(levels=3)), ids(build(levels=5))
    assert all(b[k] == v for k, v in a.items())
    assert {"train4", "train5"} <= set(b)


def test_init_seed_changes_everything():
    a, b = ids(build()), ids(build(init={"seed": 1}))
    assert all(a[k] != b[k] for k in a)


def test_stage_inputs_chain_levels():
    p = build()
    level1, level2 = p.levels[1], p.levels[2]
    assert level1["prune"].inputs["weights"] == p.levels[0]["train"].output("weights")
    assert "mask" not in level1["prune"].inputs  # level 0 is dense
    assert level2["prune"].inputs["mask"] == level1["prune"].output("mask")
    assert level1["train"].inputs["start"] == level1["rewind"].output("start")
    assert level1["rewind"].upstream == {"mask": level1["prune"].id, "init": p.stages[ids(p)["init"]].id}
    assert level1["train"].spec()["settings"]["train"]["lr"] == 0.0012


def test_unknown_stage_lookup_names_the_kind():
    with pytest.raises(KeyError, match="no train stage"):
        build().get("train", "0" * 12)


def test_one_shot_prunes_the_dense_weights_at_every_level():
    p = build(prune={"schedule": "oneshot"})
    dense = p.levels[0]["train"]
    for level in (1, 2, 3):
        prune = p.levels[level]["prune"]
        assert prune.upstream == {"trained": dense.id} and prune.settings["rounds"] == level
        assert "mask" not in prune.inputs


def test_continued_training_starts_from_the_previous_levels_weights():
    p = build(rewind={"to": "continue"})
    for level in (1, 2, 3):
        rewind = p.levels[level]["rewind"]
        assert rewind.inputs["init"] == p.levels[level - 1]["train"].output("weights")


def test_late_resetting_shares_the_dense_run_and_one_snapshot():
    p = build(rewind={"to": ["reset", "500it"]}, prune={"rate": [0.2, 0.3]})
    assert len(p.runs) == 4
    assert len({run.levels[0]["train"].id for run in p.runs}) == 1
    assert len([s for s in p.stages.values() if s.kind == "snapshot"]) == 1
    late = [run for run in p.runs if run.choices["rewind.to"] == "500it"]
    snapshot = next(s for s in p.stages.values() if s.kind == "snapshot")
    assert all(run.levels[1]["rewind"].upstream["init"] == snapshot.id for run in late)
