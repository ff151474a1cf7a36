import copy

import pytest

from lth.plan import config, build as plan


def build(**overrides):
    return plan.build(config.validate(config.merge({"levels": 3}, overrides)))


def ids(p: plan.Plan) -> dict:
    out = {"init": p.levels[0]["train"].upstream["start"]}
    for level, stages in enumerate(p.levels):
        for kind, stage in stages.items():
            out[f"{kind}{level}"] = stage.id
    return out


# Regression pins: a change here means every existing results folder is orphaned. Only
# change them on purpose (and say so in the README's Changes). Re-pinned with issue 11
# (canonical values, key-level settings, code versions in IDs).
PINNED_DEFAULTS_LEVELS_3 = {
    "init": "5e1db33debad", "train0": "8f7d76abbe46",
    "prune1": "d3c562ccc335", "rewind1": "383714f6e38c", "train1": "e4d76bc558a0",
    "train3": "3c6b761970d4",
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


def test_pruning_variants_run_side_by_side_on_one_dense_run():
    p = build(prune={"schedule": ["iterative", "oneshot"], "strategy": ["layerwise", "global"]})
    assert [run.label for run in p.runs] == [  # list values in canonical (sorted) order
        "prune.strategy=global prune.schedule=iterative", "prune.strategy=global prune.schedule=oneshot",
        "prune.strategy=layerwise prune.schedule=iterative", "prune.strategy=layerwise prune.schedule=oneshot"]
    assert len({run.levels[0]["train"].id for run in p.runs}) == 1
    level2 = [run.levels[2]["prune"] for run in p.runs]
    assert len({stage.id for stage in level2}) == 4
    for run, stage in zip(p.runs, level2):
        assert stage.settings["prune"]["strategy"] == run.choices["prune.strategy"]
        oneshot = run.choices["prune.schedule"] == "oneshot"
        assert (stage.upstream["trained"] == run.levels[0]["train"].id) == oneshot
    single = build(prune={"schedule": ["oneshot"]})  # a one-item list is the scalar's lottery, relabelled
    assert single.runs[0].levels[3]["train"].id == build(prune={"schedule": "oneshot"}).levels[3]["train"].id


def test_continued_training_starts_from_the_previous_levels_weights():
    p = build(rewind={"to": "continue"})
    assert not any(s.kind == "snapshot" for s in p.stages.values())  # nothing rewinds to a theta_k
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


def test_instability_copies_are_the_levels_training_with_other_data_orders():
    p = build(instability={"levels": [0, 2], "pairs": 2})
    pairs = p.runs[0].pairs
    assert [(e["level"], e["k"], e["pair"]) for e in pairs] == [(0, "0it", 0), (0, "0it", 1), (2, "0it", 0), (2, "0it", 1)]
    for e in pairs:
        ticket = p.levels[e["level"]]["train"]
        copies = [p.stages[e["path"].upstream[c]] for c in ("a", "b")]
        seeds = {c.settings["train"]["seed"] for c in copies} | {ticket.settings["train"]["seed"]}
        assert len(seeds) == 3  # two fresh data orders, neither the ticket's own
        for c in copies:
            assert c.kind == "train" and c.upstream == ticket.upstream and c.inputs == ticket.inputs
            assert {**c.settings, "train": {**c.settings["train"], "seed": 0}} == ticket.settings
        assert ("mask" in e["path"].inputs) == (e["level"] > 0)
    # a new pair adds stages and keeps every existing one
    fewer = build(instability={"levels": [0, 2], "pairs": 1})
    assert set(fewer.stages) - {fewer.instability.id} <= set(p.stages)
    assert fewer.instability.id != p.instability.id


def test_instability_rewinding_sweep_of_the_dense_network_shares_snapshots():
    p = build(rewind={"to": ["reset", "100it"]}, instability={"levels": [0, 1], "points": ["100it", "300it"]})
    ks = {(run.label, e["level"], e["k"]) for run in p.runs for e in run.pairs}
    assert ks == {("rewind.to=reset", 0, "0it"), ("rewind.to=reset", 0, "100it"), ("rewind.to=reset", 0, "300it"),
                  ("rewind.to=reset", 1, "0it"), ("rewind.to=100it", 0, "100it"), ("rewind.to=100it", 0, "300it"),
                  ("rewind.to=100it", 1, "100it")}
    # the dense network's copies at k are one set of stages, shared by both lotteries
    dense_paths = {e["path"].id for run in p.runs for e in run.pairs if e["level"] == 0}
    assert len(dense_paths) == 3
    snapshots = [s for s in p.stages.values() if s.kind == "snapshot"]
    assert sorted(s.settings["at"] for s in snapshots) == ["100it", "300it"]
    copy = p.stages[next(e for e in p.runs[0].pairs if e["k"] == "300it")["path"].upstream["a"]]
    assert copy.settings["rewind"] == {"to": "300it"} and copy.inputs["start"].endswith("weights.pt")


def test_no_analysis_options_keep_the_summary_and_add_no_stages():
    plain = build()
    assert plain.instability is None and plain.classes is None and len(plain.anatomy) == 1
    assert {s.kind for s in plain.stages.values()} == {"init", "train", "prune", "rewind", "summary",
                                                         "correlation", "anatomy"}


def test_perturbations_are_trained_like_controls_and_skip_identities_at_reset():
    reset = build(perturb={"kinds": ["signs_from_0", "noise", "permute_layer"], "noise": [0.5, 2], "levels": [2]})
    assert set(reset.levels[2]) == {"prune", "rewind", "train", "noise_0.5", "noise_2", "permute_layer"}
    assert set(reset.levels[1]) == {"prune", "rewind", "train"}
    variants = reset.summary.layout["runs"][0]
    assert variants["noise_2"] == [None, None, reset.levels[2]["noise_2"].id, None]
    late = build(rewind={"to": "100it"}, perturb={"kinds": ["signs_from_0", "magnitudes_from_0"]})
    for level in (1, 2, 3):
        trained = late.levels[level]["signs_from_0"]
        perturbed = late.stages[trained.upstream["start"]]
        assert perturbed.kind == "perturb" and perturbed.settings["perturbation"] == "signs_from_0"
        assert trained.settings == late.levels[level]["train"].settings  # same recipe, resumes at k
        assert trained.inputs["mask"] == late.levels[level]["train"].inputs["mask"]


def test_classes_group_runs_by_everything_but_the_learning_rate():
    p = build(train={"lr": [0.001, 0.01], "seed": [0, 1]}, controls={"random_reinit": True, "small_dense": True},
              classes={"enabled": True})
    runs = p.classes.layout["runs"]
    assert len(runs) == 4 and {r["group"] for r in runs} == {"imp"}
    assert sorted({r["lr"] for r in runs}) == [0.001, 0.01]
    assert p.classes.inputs == {"summary": p.summary.output("table")}


@pytest.mark.parametrize("overrides, message", [
    ({"classes": {"enabled": True}}, "classes.enabled needs controls.random_reinit: true"),
    ({"instability": {"levels": [1], "variants": ["random_prune"]}},
     "instability.variants has random_prune but controls.random_prune is false"),
    ({"perturb": {"kinds": ["flip"]}}, "perturb.kinds"),
])
def test_analysis_options_are_checked(overrides, message):
    with pytest.raises(config.ConfigError, match=message.replace(".", r"\.")):
        build(**overrides)


def test_analysis_levels_beyond_the_run_are_skipped_with_a_note():
    cfg = config.validate({"levels": 3, "instability": {"levels": [0, 3, 7]},
                           "perturb": {"kinds": ["noise"], "levels": [2, 9]}})
    assert config.notes(cfg) == ["note: instability.levels 7 are beyond levels (3) and are skipped",
                                 "note: perturb.levels 9 are beyond levels (3) and are skipped"]
    p = plan.build(cfg)
    assert [e["level"] for e in p.runs[0].pairs] == [0, 3]
    assert [lvl for lvl, stages in enumerate(p.levels) if "noise_1" in stages] == [2]
    assert config.notes(config.validate({"levels": 3})) == []


def test_plan_command_lists_levels_pairs_and_final_stages():
    import subprocess
    import sys
    from conftest import ROOT
    proc = subprocess.run([sys.executable, "-m", "lth", "plan", str(ROOT / "config.yaml")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    p = plan.build(config.load(ROOT / "config.yaml"))
    lines = proc.stdout.splitlines()
    level8 = p.levels[8]
    assert f"  level 8: prune {level8['prune'].id}  rewind {level8['rewind'].id}  train {level8['train'].id}  " \
           f"random_reinit {level8['random_reinit'].id}" in lines
    assert sum("instability level" in line for line in lines) == len(p.runs[0].pairs) == 3
    for stage in (p.summary, p.correlation, p.anatomy[0], p.instability, p.final("landscape")):
        assert f"{stage.kind} {stage.id} -> {stage.dir}" in lines
    assert lines[-1].startswith(f"{len(p.stages)} stages: 1 init, ")
    # --list names every stage, the reinit controls' starts and the instability copies included
    listed = subprocess.run([sys.executable, "-m", "lth", "plan", "--list", "--config", "rewind={to: 100it}"],
                            capture_output=True, text=True, cwd=ROOT).stdout.splitlines()
    p = plan.build(config.load(ROOT / "config.yaml", {"rewind": {"to": "100it"}}))
    named = {line.split()[1] for line in listed if " -> " in line and line.split()[0] in
             {s.kind for s in p.stages.values()}}
    assert named == set(p.stages) and any(line.startswith("snapshot ") for line in listed)


def test_plan_command_reads_a_preset_over_config_yaml_like_snakemake():
    import subprocess
    import sys
    from conftest import ROOT
    preset = ROOT / "presets" / "fashion_sanity_cpu.yaml"
    # ./config.yaml first, then the preset, then --config: as `snakemake --configfile PRESET --config ...`
    proc = subprocess.run([sys.executable, "-m", "lth", "plan", str(preset), "--config", "results=elsewhere"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    p = plan.build(config.load([ROOT / "config.yaml", preset], {"results": "elsewhere"}))
    lines = proc.stdout.splitlines()
    assert f"classes {p.classes.id} -> elsewhere/classes/{p.classes.id}" in lines
    assert sum(line.startswith("train.lr=") for line in lines) == 3  # the preset's three learning rates


def test_noise_scales_that_print_alike_stay_two_variants():
    p = build(perturb={"kinds": ["noise"], "noise": [0.1234561, 0.1234562], "levels": [1]})
    assert {"noise_0.1234561", "noise_0.1234562"} <= set(p.levels[1])
    assert "noise_1" in build(perturb={"kinds": ["noise"], "levels": [1]}).levels[1]  # 1.0 keeps its old name


def test_a_rewind_point_of_zero_epochs_is_the_dense_start_once():
    p = build(instability={"levels": [0], "points": ["0ep"]})
    assert [(e["level"], e["k"]) for e in p.runs[0].pairs] == [(0, "0it")]


def test_the_plan_records_upstream_variant_and_lottery_of_every_stage():
    """One shape of `upstream` ({name: ID of a stage in the plan}), each stage's variant and
    the lottery choices it depends on: what catalog, verdict and job grouping read."""
    p = build(train={"lr": [0.001, 0.01]}, controls={"random_reinit": True, "random_prune": True},
              perturb={"kinds": ["noise"], "noise": [1], "levels": [2]}, instability={"levels": [0, 2], "pairs": 1})
    for stage in p.stages.values():
        assert all(isinstance(k, str) and v in p.stages for k, v in stage.upstream.items()), stage.kind
    assert set(p.summary.upstream.values()) == {s.id for s in p.stages.values() if s.kind == "train"
                                                and s.variant != "instability_copy"}
    level = p.runs[1].levels[2]
    assert [level[v].variant for v in ("train", "random_reinit", "random_prune", "noise_1")] == \
        ["ticket", "random_reinit", "random_prune", "noise_1"]
    assert p.stages[level["random_reinit"].upstream["start"]].variant == "random_reinit"
    assert level["train"].lottery == {"init.seed": 0, "init.std_scale": 1, "train.lr": 0.01, "train.seed": 0,
                                      "train.warmup": "0it",
                                      "prune.strategy": "layerwise", "prune.rate": 0.2, "prune.conv_rate": None,
                                      "prune.schedule": "iterative", "prune.output_rate": 0.1, "rewind.to": "reset",
                                      "prune.granularity": "weights", "prune.criterion": "magnitude"}
    init = p.stages[p.runs[0].levels[0]["train"].upstream["start"]]
    assert init.lottery == {"init.seed": 0, "init.std_scale": 1} == init.spec()["lottery"]  # shared by both rates
    assert "train.lr" not in p.summary.lottery and p.anatomy[1].lottery["train.lr"] == 0.01
    copies = {p.stages[e["path"].upstream[c]].variant for run in p.runs for e in run.pairs for c in ("a", "b")}
    assert copies == {"instability_copy"}
    assert p.instability.related == {"summary": p.summary.id} and "related" not in p.instability.identity()


def test_dense_lr_trains_the_dense_network_and_its_snapshots_at_their_own_rate():
    """Ma et al. Table 4: pretraining at train.dense_lr, the tickets at train.lr. The dense
    run and theta_k hash as a lottery trained throughout at that rate (shared, not retrained)."""
    split = build(train={"lr": [0.01, 0.05], "dense_lr": 0.1}, rewind={"to": "100it"})
    plain = build(train={"lr": 0.1}, rewind={"to": "100it"})
    dense = {run.levels[0]["train"].id for run in split.runs}
    assert dense == {plain.levels[0]["train"].id}
    assert split.runs[0].levels[0]["train"].settings["train"]["lr"] == 0.1
    assert split.runs[0].levels[1]["rewind"].upstream["init"] == plain.levels[1]["rewind"].upstream["init"]  # theta_k
    assert [run.levels[1]["train"].settings["train"]["lr"] for run in split.runs] == [0.01, 0.05]
    assert split.runs[0].levels[1]["train"].lottery["train.dense_lr"] == 0.1
    assert split.runs[0].levels[1]["train"].lottery["train.lr"] == 0.01
    # unset: nothing changes; a list: one dense run per rate
    assert ids(build(train={"dense_lr": None})) == ids(build())
    assert len({run.levels[0]["train"].id for run in build(train={"dense_lr": [0.01, 0.1]}).runs}) == 2


def test_fine_tune_trains_the_pruned_weights_on_the_tickets_own_mask():
    """Liu et al. Figs. 6-7: fine-tuning, the ticket and the reinit share each level's mask;
    the fine-tuning starts from the weights the mask was cut from, at iteration 0."""
    for schedule in ("iterative", "oneshot"):
        p = build(controls={"fine_tune": True, "random_reinit": True}, prune={"schedule": schedule})
        for level in (1, 2, 3):
            stages = p.levels[level]
            start = p.stages[stages["fine_tune"].upstream["start"]]
            assert start.upstream["mask"] == stages["prune"].id == stages["rewind"].upstream["mask"]
            assert p.stages[stages["random_reinit"].upstream["start"]].upstream["mask"] == stages["prune"].id
            pruned = p.levels[0 if schedule == "oneshot" else level - 1]["train"]
            assert start.upstream["init"] == pruned.id
            assert "rewind" not in stages["fine_tune"].settings  # from iteration 0
    assert ids(build(controls={"fine_tune": False})) == ids(build())
    # a continue lottery's ticket is the fine-tuning: not planned twice
    assert all("fine_tune" not in lvl for lvl in build(controls={"fine_tune": True}, rewind={"to": "continue"}).levels)
    assert "samemask" in build(controls={"fine_tune": True}).finals
    assert build().finals["samemask"] == []
