"""Real Snakemake runs (the CLI, in a subprocess) on a tiny config: jobs are counted rule by
rule from Snakemake's own "Finished jobid: N (Rule: R)" lines."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SNAKEFILE, jobs, run, snakemake, tiny_config


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_idx_dataset):
    """The tiny workflow, run once for the module's cache tests; read only: each test gets
    its own copy (`workdir`), so no test sees what another did to it."""
    directory = tmp_path_factory.mktemp("wf")
    first = run(directory, tiny_config(small_idx_dataset))
    assert first == {"init": 1, "train": 4, "prune": 3, "rewind": 3, "summary": 1, "correlation": 1, "anatomy": 1}
    return directory


@pytest.fixture
def workdir(built, tmp_path_factory):
    """A copy of the built workflow folder (mtimes and .snakemake kept: nothing to rerun)."""
    directory = tmp_path_factory.mktemp("wf-copy") / "wf"
    shutil.copytree(built, directory, symlinks=True)
    return directory


@pytest.mark.slow
def test_a_rerun_with_no_change_does_nothing(workdir, small_idx_dataset):
    assert run(workdir, tiny_config(small_idx_dataset)) == {}


@pytest.mark.slow
def test_summary_command_finds_the_run_by_config_or_by_folder(workdir, small_idx_dataset):
    from lth.plan import config, build as plan
    summary_dir = plan.build(config.load(workdir / "config.yaml")).summary.dir

    def lth(*args):
        return subprocess.run([sys.executable, "-m", "lth", "summary", *args], cwd=workdir,
                              capture_output=True, text=True)
    for args in ((), ("results",), (summary_dir,)):  # ./config.yaml, the results folder, the stage
        proc = lth(*args)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == f"{summary_dir}/summary.parquet"
        assert sum(" ticket " in line for line in lines) == 4  # levels 0..3
    missing = lth("--config", "prune.rate=0.5")  # merged over ./config.yaml: a run not made yet
    assert missing.returncode == 1 and "no summary yet" in missing.stderr


@pytest.mark.slow
def test_every_job_wrote_a_log_with_a_progress_line(workdir):
    logs = {p.parent.name: p.read_text() for p in (workdir / "results" / "logs").rglob("????????????.log")}
    assert set(logs) == {"init", "train", "prune", "rewind", "summary", "correlation", "anatomy"}
    train_logs = [p.read_text() for p in (workdir / "results" / "logs" / "train").glob("????????????.log")]
    assert len(train_logs) == 4 and all("it 20/20 (100%)" in text for text in train_logs)


@pytest.mark.slow
def test_pruning_rate_edit_on_the_command_line_keeps_init_and_dense_training(workdir, small_idx_dataset):
    (workdir / "config.yaml").write_text(yaml.safe_dump(tiny_config(small_idx_dataset)))
    counts = jobs(snakemake(workdir, "--config", 'prune={"rate": 0.3}'))
    assert counts == {"train": 3, "prune": 3, "rewind": 3, "summary": 1, "correlation": 1, "anatomy": 1}


@pytest.mark.slow
def test_more_levels_run_only_the_new_levels(workdir, small_idx_dataset):
    counts = run(workdir, tiny_config(small_idx_dataset, levels=5))
    assert counts == {"train": 2, "prune": 2, "rewind": 2, "summary": 1, "correlation": 1, "anatomy": 1}


@pytest.mark.slow
def test_reverting_an_edit_reruns_nothing(workdir, small_idx_dataset):
    assert run(workdir, tiny_config(small_idx_dataset, prune={"rate": 0.3}))["prune"] == 3  # the edit, built
    assert run(workdir, tiny_config(small_idx_dataset)) == {}
    assert run(workdir, tiny_config(small_idx_dataset, prune={"rate": 0.3})) == {}


@pytest.mark.slow
def test_training_edit_reruns_training_and_everything_after(workdir, small_idx_dataset):
    counts = run(workdir, tiny_config(small_idx_dataset, train={"lr": 0.001}))
    assert counts == {"train": 4, "prune": 3, "rewind": 3, "summary": 1, "correlation": 1, "anatomy": 1}


@pytest.mark.slow
def test_summary_has_one_row_per_level_with_the_mask_arithmetic(workdir, small_idx_dataset):
    import pandas as pd
    from lth.plan import config, build as plan
    cfg = config.validate(tiny_config(small_idx_dataset))
    summary = plan.build(cfg).summary
    frame = pd.read_parquet(workdir / summary.output("table"))
    assert frame.level.tolist() == [0, 1, 2, 3]
    assert frame.weights_remaining_pct.round(1).tolist() == [100.0, 80.0, 64.1, 51.3]
    assert (workdir / summary.output("csv")).read_text().startswith("run,lottery,variant,level,train_id,")
    assert (workdir / summary.output("plot")).read_bytes()[:4] == b"\x89PNG"
    assert set(frame.train_id) == {lvl["train"].id for lvl in plan.build(cfg).levels}


@pytest.mark.slow
def test_stage_artifacts_are_consistent(workdir, small_idx_dataset):
    import json
    import torch
    from lth.plan import config, build as plan
    from lth.store import masks, ptfile
    from lth.store.starts import load_start
    cfg = config.validate(tiny_config(small_idx_dataset))
    p = plan.build(cfg)
    for level in p.levels[1:]:
        mask = masks.read(workdir / level["prune"].output("mask"))
        # a rewind's start is a reference (start.json): theta_0 and the mask, applied by load_start
        start = {k: torch.from_numpy(v) for k, v in load_start(workdir / level["rewind"].output("start")).items()}
        weights = workdir / level["train"].output("weights")
        trained = {k: torch.from_numpy(v) for k, v in ptfile.load(weights).items()}
        # packed: only the survivors are stored, in a file torch maps in place
        stored = torch.load(weights, mmap=True, weights_only=True)
        assert all(stored[f"{name}@kept"].numel() == keep.sum() for name, keep in mask.items())
        if level is p.levels[-1]:  # `lth start` writes it dense, for model.load_state_dict
            out = workdir / "dense.pt"
            proc = subprocess.run([sys.executable, "-m", "lth", "start", str(weights), "-o", str(out)],
                                  cwd=workdir, capture_output=True, text=True)
            assert proc.returncode == 0 and "dense" in proc.stdout, proc.stderr
            dense = torch.load(out, weights_only=True, mmap=True)
            assert list(dense) == list(trained) and all(torch.equal(dense[k], trained[k]) for k in trained)
        for name, keep in mask.items():
            pruned = ~torch.from_numpy(keep)
            assert torch.count_nonzero(start[name][pruned]) == 0
            assert torch.count_nonzero(trained[name][pruned]) == 0
        spec = json.loads((workdir / level["train"].output("spec")).read_text())
        # what the job worked out with this dataset: 1,000 training examples / 60 per batch
        assert spec.pop("resolved") == {"iterations": 20, "start_iteration": 0, "steps_per_epoch": 16}
        assert spec == json.loads(json.dumps(level["train"].spec()))


@pytest.mark.slow
def test_same_config_gives_byte_identical_artifacts(tmp_path, small_idx_dataset, workdir):
    cfg = tiny_config(small_idx_dataset, levels=2)
    assert run(tmp_path, cfg)["train"] == 3
    compared = 0
    for path in (tmp_path / "results").rglob("*"):
        if path.parent.parent.name in ("summary", "correlation", "anatomy"):  # levels differ: other stages
            continue
        if path.suffix in (".pt", ".parquet") or path.name == "spec.json":
            twin = workdir / path.relative_to(tmp_path)
            assert twin.read_bytes() == path.read_bytes(), path
            compared += 1
    assert compared >= 15


@pytest.mark.parametrize("override, key", [
    ('prune={"rate": 1.5}', "prune.rate"),
    ('prune={"rat": 0.2}', "prune.rat"),
    ("levels=-1", "levels"),
    ('train={"lr": "fast"}', "train.lr"),
])
def test_bad_config_stops_before_any_job_with_one_line(tmp_path, small_idx_dataset, override, key):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config(small_idx_dataset)))
    proc = snakemake(tmp_path, "--config", override, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("config:")]
    assert len(errors) == 1 and key in errors[0]
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_missing_dataset_stops_the_run_before_any_job_with_one_line(tmp_path, small_idx_dataset):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path / "nowhere", levels=0)))
    assert snakemake(tmp_path, "-n").returncode == 0  # a dry run does not need the data
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0 and not (tmp_path / "results").exists()  # not even init ran
    line = f"error: fashion_mnist: missing file: {tmp_path / 'nowhere' / 'train-images-idx3-ubyte.gz'}; install it"
    assert line in proc.stderr.splitlines()[-1]
    # With the data there and the trainings done, the data is not needed any more: nothing
    # to do, even with the files gone.
    tiny = tmp_path / "moved"
    shutil.copytree(small_idx_dataset, tiny)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config(tiny, levels=0)))
    snakemake(tmp_path)
    shutil.rmtree(tiny)
    assert jobs(snakemake(tmp_path)) == {}


def test_lint_is_clean():
    """Clean but for one lint: rules name no conda env or container. Jobs run with the
    interpreter that runs snakemake (the venv tools/setup.sh builds from requirements.lock);
    a conda env could not be built here (no conda-forge), so the untested one was removed."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--lint"],
                          cwd=ROOT, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    titles = set(re.findall(r"^    \* (.+?):?$", output, re.M))
    assert titles == {"Specify a conda environment or container for each rule."}, output
    assert "Lints for snakefile" not in output


@pytest.mark.slow
def test_imp_and_one_shot_side_by_side_share_the_dense_run_and_reach_the_same_sparsity(tmp_path, small_idx_dataset):
    from lth.plan import config, build as plan
    from lth.store import masks
    raw = tiny_config(small_idx_dataset, levels=2, prune={"schedule": ["iterative", "oneshot"]})
    assert run(tmp_path, raw) == {"init": 1, "train": 5, "prune": 4, "rewind": 4, "summary": 1, "correlation": 1,
                                  "anatomy": 2}
    imp, oneshot = plan.build(config.validate(raw)).runs
    for level in (1, 2):
        a, b = (masks.read(tmp_path / run.levels[level]["prune"].output("mask")) for run in (imp, oneshot))
        assert {n: int(m.sum()) for n, m in a.items()} == {n: int(m.sum()) for n, m in b.items()}
    summary = (tmp_path / plan.build(config.validate(raw)).summary.output("csv")).read_text()
    assert "prune.schedule=iterative" in summary and "prune.schedule=oneshot" in summary


@pytest.mark.slow
def test_two_rewind_points_and_two_rates_train_the_dense_network_once(tmp_path, small_idx_dataset):
    import torch
    from lth.plan import config, build as plan
    from lth.nn import data, models, training
    from lth.store import masks
    from lth.store.starts import load_start
    raw = tiny_config(small_idx_dataset, levels=1, rewind={"to": ["reset", "7it"]}, prune={"rate": [0.2, 0.3]})
    counts = run(tmp_path, raw)
    # dense training once; one snapshot (theta_k); a mask per rate; a start and a training per lottery
    assert counts == {"init": 1, "train": 5, "snapshot": 1, "prune": 2, "rewind": 4, "summary": 1, "correlation": 1,
                      "anatomy": 4}

    # Rewinding to k starts level 1 from the dense run's step-k weights times the mask:
    # recompute the dense run in-process, capturing its weights at k = 7.
    cfg = config.validate(raw)
    p = plan.build(cfg)
    dataset = data.load("fashion_mnist", str(small_idx_dataset))
    splits = training.prepare(dataset, 200, 0)
    dense = models.build("lenet_300_100", seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg["threads"])  # the jobs' thread count: matmul bits depend on it
    try:
        theta_k = training.train(dense, None, splits, cfg["train"], capture=(7,)).snapshots[7]
    finally:
        torch.set_num_threads(threads)
    late = [r for r in p.runs if r.choices["rewind.to"] == "7it"]
    assert len(late) == 2
    for run_ in late:
        level = run_.levels[1]
        start = {k: torch.from_numpy(v) for k, v in load_start(tmp_path / level["rewind"].output("start")).items()}
        mask = masks.read(tmp_path / level["prune"].output("mask"))
        for name, value in theta_k.items():
            expected = value * torch.from_numpy(mask[name]) if name in mask else value
            assert torch.equal(start[name], expected), name
        stats = json.loads((tmp_path / level["train"].output("stats")).read_text())
        assert stats["start_iteration"] == 7
    import pandas as pd
    frame = pd.read_parquet(tmp_path / p.summary.output("table"))
    assert sorted(frame.run.unique()) == sorted(r.label for r in p.runs) and len(frame) == 8


@pytest.mark.slow
def test_controls_train_beside_the_ticket_at_each_level(tmp_path, small_idx_dataset):
    import pandas as pd
    import torch
    from lth.plan import config, build as plan
    from lth.store import masks, ptfile
    from lth.nn import models
    raw = tiny_config(small_idx_dataset, levels=2,
                      controls={"random_reinit": True, "random_prune": True, "small_dense": True})
    counts = run(tmp_path, raw)
    assert counts == {"init": 1, "train": 9, "prune": 2, "rewind": 4, "reinit": 2, "randmask": 2,
                      "smalldense": 2, "summary": 1, "correlation": 1, "anatomy": 1}
    cfg = config.validate(raw)
    p = plan.build(cfg)
    theta0 = torch.load(tmp_path / p.stages[p.levels[0]["train"].upstream["start"]].output("weights"),
                        weights_only=True)
    for level in (1, 2):
        stages = p.levels[level]
        reinit = p.get("reinit", stages["random_reinit"].upstream["start"])
        seed = json.loads((tmp_path / reinit.output("spec")).read_text())["settings"]["seed"]
        assert seed != cfg["init"]["seed"]
        mask = masks.read(tmp_path / stages["prune"].output("mask"))
        start = {k: torch.from_numpy(v) for k, v in ptfile.load(tmp_path / reinit.output("start")).items()}
        fresh = models.build("lenet_300_100", seed).state_dict()
        for name, keep in mask.items():
            keep = torch.from_numpy(keep)
            assert torch.equal(start[name], fresh[name] * keep)
            assert not torch.equal(start[name][keep], theta0[name][keep])
        random_mask = masks.read(tmp_path / stages["random_prune"].inputs["mask"])
        assert {n: m.sum() for n, m in random_mask.items()} == {n: m.sum() for n, m in mask.items()}
    # the catalog says which training is which, from the records alone
    from lth.report import catalog
    variant = {row["id"]: row["variant"] for row in catalog.rows(tmp_path / "results")[0]}
    for level in (1, 2):
        stages = p.levels[level]
        assert variant[stages["train"].id] == "ticket"
        assert all(variant[stages[c].id] == c for c in ("random_prune", "random_reinit", "small_dense"))
    frame = pd.read_parquet(tmp_path / p.summary.output("table"))
    by_level = frame.groupby("level").variant.apply(sorted).to_dict()
    controls = ["random_prune", "random_reinit", "small_dense", "ticket"]
    assert by_level == {0: ["ticket"], 1: controls, 2: controls}
    same = frame[frame.variant != "small_dense"]
    assert same.groupby("level").weights_kept.nunique().eq(1).all()  # same sparsity per level
    for level in (1, 2):
        rows = frame[frame.level == level].set_index("variant")
        small, ticket = rows.weights_kept["small_dense"], rows.weights_kept["ticket"]
        assert abs(small - ticket) / ticket < 0.02 and rows.weights_total["small_dense"] == 266_200


@pytest.mark.slow
def test_replicates_expand_over_seeds_and_are_averaged(tmp_path, small_idx_dataset):
    import pandas as pd
    from lth.plan import config, build as plan
    raw = tiny_config(small_idx_dataset, levels=1, init={"seed": [0, 1]}, train={"seed": [0, 3]})
    assert run(tmp_path, raw) == {"init": 2, "train": 8, "prune": 4, "rewind": 4, "summary": 1, "correlation": 1,
                                  "anatomy": 4}
    p = plan.build(config.validate(raw))
    frame = pd.read_parquet(tmp_path / p.summary.output("table"))
    stats = pd.read_csv(tmp_path / p.summary.output("replicates"))
    assert stats.replicates.tolist() == [4, 4] and stats.lottery.unique().tolist() == ["imp"]
    level1 = frame[frame.level == 1].final_test_accuracy
    assert stats.final_test_accuracy_mean[1] == pytest.approx(level1.mean(), rel=1e-5)  # csv: 6 digits
    assert stats.final_test_accuracy_std[1] == pytest.approx(level1.std(ddof=1), rel=1e-5)


@pytest.mark.slow
def test_weight_correlation_of_every_level(workdir, small_idx_dataset):
    import pandas as pd
    from lth.plan import config, build as plan
    p = plan.build(config.validate(tiny_config(small_idx_dataset)))
    frame = pd.read_parquet(workdir / p.correlation.output("table"))
    overall = frame[frame.layer == "all"]
    assert sorted(overall.level.unique()) == [0, 1, 2, 3]
    assert sorted(overall.p.unique()) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert overall.r_p.between(0, 1).all()
    assert set(frame.layer) == {"all", "fc1.weight", "fc2.weight", "fc3.weight"}
    # consecutive levels: level L-1's trained weights against level L's, over level L's survivors
    from lth.report import correlation
    from lth.store import masks, ptfile
    consecutive = overall[overall.comparison == "consecutive levels"]
    assert sorted(consecutive.level.unique()) == [1, 2, 3]
    for level in (1, 3):
        before = ptfile.load(workdir / p.levels[level - 1]["train"].output("weights"))
        after = ptfile.load(workdir / p.levels[level]["train"].output("weights"))
        mask = masks.read(workdir / p.levels[level]["prune"].output("mask"))
        expected = correlation.r_p(before, after, 0.2, list(mask), mask)[0]
        assert consecutive[(consecutive.level == level) & (consecutive.p == 0.2)].r_p.item() == expected
    for name in ("by_p", "by_remaining"):
        assert (workdir / p.correlation.output(name)).read_bytes()[:4] == b"\x89PNG"
    # the CLI computes it for any two weight files: a file against itself is 1
    level = p.levels[1]["train"]
    proc = subprocess.run([sys.executable, "-m", "lth", "rp", level.output("weights"), level.output("weights"),
                           "--p", "0.2", "--model", level.inputs["model"]], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0 and "R_p=1.0000" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.slow
def test_analyses_run_as_cached_stages_and_make_the_report(tmp_path, small_idx_dataset):
    """Instability pairs, a perturbation, ticket classes over two learning rates and the
    anatomy, through real Snakemake; a second pair adds only its own jobs; the HTML report
    holds every figure."""
    import pandas as pd
    from lth.plan import config, build as plan
    raw = tiny_config(small_idx_dataset, levels=2, train={"lr": [0.0012, 0.003]},
                      controls={"random_reinit": True, "small_dense": True},
                      instability={"levels": [0, 2], "alphas": 4, "train_subset": 300},
                      perturb={"kinds": ["signs_from_0", "noise"], "levels": [2]},
                      classes={"enabled": True})
    counts = run(tmp_path, raw)
    # per learning rate: 3 ticket levels, 2 reinit, 2 small dense, 1 noise perturbation
    # (signs_from_0 at reset is the ticket itself: skipped), 2 networks x 2 instability copies
    assert counts == {"init": 1, "train": 2 * (3 + 2 + 2 + 1 + 4), "prune": 4, "rewind": 4, "reinit": 4,
                      "smalldense": 4, "perturb": 2, "interpolate": 4, "instability": 1, "classes": 1,
                      "summary": 1, "correlation": 1, "anatomy": 2, "perturbation": 1}
    raw["instability"]["pairs"] = 2
    assert run(tmp_path, raw) == {"train": 8, "interpolate": 4, "instability": 1}

    p = plan.build(config.validate(raw))
    paths = pd.read_parquet(tmp_path / p.instability.output("table"))
    assert len(paths) == 2 * 2 * 2 * 4 * 2  # lrs x networks x pairs x alphas x splits
    assert set(paths.split) == {"test", "train"} and not paths.bn_recomputed.any()  # LeNet has no BatchNorm
    result = pd.read_csv(tmp_path / p.instability.output("summary"))
    assert len(result) == 4 and set(result.pairs) == {2} and set(result.level) == {0, 2}
    assert ((result.instability_test < 0.02) == result.stable).all()
    said = (tmp_path / p.instability.output("verdict")).read_text().splitlines()
    lotteries = list(dict.fromkeys(result.lottery))
    assert len(said) == len(lotteries) == 2  # one line per learning rate's lottery
    for lottery, line in zip(lotteries, said):
        assert line.startswith(f"{lottery}: instability: stable and matching at ")
        good = result[(result.lottery == lottery) & result.stable & result.matching]
        assert all(f"{level} (" in line.split("; not at")[0] for level in good.level)
    from lth.report.instability import ONSET_COLUMNS  # LMC Fig. 9's table: one row per network, 2 pairs each
    onset = pd.read_csv(tmp_path / p.instability.output("onset"))
    assert tuple(onset.columns) == ONSET_COLUMNS and len(onset) == 4 and set(onset.pairs) == {2}
    summary = pd.read_parquet(tmp_path / p.summary.output("table"))
    assert set(summary.variant) == {"ticket", "random_reinit", "small_dense", "noise_1"}
    assert set(summary[summary.variant == "noise_1"].level) == {2}
    classes = pd.read_csv(tmp_path / p.classes.output("table"))
    assert list(classes.level) == [1, 2] and set(classes.prize) <= {"jackpot", "secondary prize", "neither"}
    anatomy = pd.read_parquet(tmp_path / p.anatomy[0].output("table"))
    assert {"distance_kept", "distance_pruned", "incoming_mean", "units_without_incoming_pct"} <= set(anatomy.quantity)

    proc = snakemake(tmp_path, "--report", "report.html")
    html = (tmp_path / "report.html").read_text()
    figures = [path for stage in (p.summary, p.correlation, p.instability, p.classes, *p.anatomy,
                                  p.final("perturbation"))
               for path in stage.outputs.values() if path.endswith((".png", ".csv")) and "replicates" not in path
               and not path.endswith("summary/" + p.summary.id + "/summary.csv") and not path.endswith("/perturbation.csv")]
    # + onset table and 2 plots, 2 x magnitude table and plot, learning curves, perturbation strength's r table and plot
    assert len(figures) == 26
    for path in figures:
        assert f'"{path}": {{"name": "{Path(path).name}"' in html, path
    pngs = [path for path in figures if path.endswith(".png")]
    # PNG bytes, embedded; the front page shows the ticket against its controls once more
    assert html.count(";base64,iVBORw0KGgo") - 1 == len(pngs) == 20, proc.stderr[-2000:]
    assert html.count(".. image:: data:image/png") == 0 and "ticket vs controls: test accuracy at early stop" in html
    # the front page shows each verdict under its own heading
    assert "Verdict of the summary table" in html and "Verdict of the instability analysis" in html


@pytest.mark.slow
def test_strategy_2_trains_the_continue_masks_from_theta_0(tmp_path, small_idx_dataset):
    """LTH'19 appendix B's strategy 2 (rewind.reset_at_end): the masks found by pruning with
    continued training, each also trained from theta_0, a variant beside the fine-tuned
    ticket; turning it on adds only those stages (and a new summary)."""
    import json

    import pandas as pd
    from lth.plan import build, config
    cfg = tiny_config(small_idx_dataset, levels=2, rewind={"to": "continue", "reset_at_end": True})
    assert run(tmp_path, cfg) == {"init": 1, "prune": 2, "rewind": 4, "train": 5, "summary": 1, "anatomy": 1,
                                  "correlation": 1, "samemask": 1}
    plan = build.build(config.validate(dict(cfg, results=str(tmp_path / "results"))))
    without = build.build(config.validate(dict(cfg, results=str(tmp_path / "results"),
                                               rewind={"to": "continue"})))
    added = {plan.stages[s].kind for s in set(plan.stages) - set(without.stages)}
    assert added == {"rewind", "train", "summary", "samemask"}
    assert not set(without.stages) - set(plan.stages) - {without.summary.id}
    init = plan.stages[plan.levels[0]["train"].upstream["start"]]
    for level in (1, 2):
        stages = plan.levels[level]
        start = plan.stages[stages["reset_at_end"].upstream["start"]]
        reference = json.loads((tmp_path / start.output("start")).read_text())
        assert reference["weights"]["file"] == f"init/{init.id}/weights.pt"  # theta_0, not fine-tuned weights
        assert reference["mask"]["file"] == f"prune/{stages['prune'].id}/mask.parquet"  # the continue chain's mask
    summary = pd.read_parquet(tmp_path / plan.summary.output("table"))
    assert sorted(summary[summary.variant == "reset_at_end"].level) == [1, 2]


@pytest.mark.slow
def test_same_mask_comparison_and_split_learning_rates(tmp_path, small_idx_dataset):
    """Liu et al. Figs. 6-7 and Ma et al. Tables 3-4 in one tiny run: per mask generator
    (iterative, one-shot) fine-tuning, ticket and reinit on each level's own mask; the dense
    network pretrained at train.dense_lr, the tickets at two train.lr; the ticket classes
    state "prefer small lr" and "prefer IMP"."""
    import json

    import pandas as pd
    from lth.plan import build, config
    cfg = tiny_config(small_idx_dataset, levels=1, train={"lr": [0.0006, 0.003], "dense_lr": 0.0012},
                      prune={"schedule": ["iterative", "oneshot"]}, classes={"enabled": True},
                      controls={"fine_tune": True, "random_reinit": True, "small_dense": True})
    done = run(tmp_path, cfg)
    # one dense run for the four lotteries; per lottery and level: ticket, fine-tuning, reinit, small dense
    assert done["train"] == 1 + 4 * 4 and done["samemask"] == done["classes"] == 1
    plan = build.build(config.validate(dict(cfg, results=str(tmp_path / "results"))))
    for run_ in plan.runs:
        oneshot = run_.choices["prune.schedule"] == "oneshot"
        for level in (1,):
            stages = run_.levels[level]
            start = json.loads((tmp_path / plan.stages[stages["fine_tune"].upstream["start"]].output("start")).read_text())
            pruned = run_.levels[0 if oneshot else level - 1]["train"]
            assert start["weights"]["file"] == f"train/{pruned.id}/weights.pt"  # the weights the mask was cut from
            assert start["mask"]["file"] == f"prune/{stages['prune'].id}/mask.parquet"  # the ticket's own mask
    metrics = pd.read_parquet(tmp_path / plan.runs[0].levels[0]["train"].output("metrics"))
    assert plan.runs[0].levels[0]["train"].settings["train"]["lr"] == 0.0012 and len(metrics)
    same = pd.read_csv(tmp_path / plan.finals["samemask"][0].output("table"))
    assert len(same) == 4 * 3 and set(same.network) == {"pruning & fine-tuning", "winning ticket init",
                                                          "random reinit"}
    assert (tmp_path / plan.finals["samemask"][0].output("plot")).stat().st_size > 10_000
    classes = pd.read_csv(tmp_path / plan.finals["classes"][0].output("table"))
    assert len(classes) == 2  # the (iterative, one-shot) groups at level 1
    assert set(classes.prefer_small_lr) <= {"yes", "no", "at boundary"}
    assert set(classes.prefer_imp) <= {"yes", "no", "at boundary"}
    assert (classes.dense_best_lr == 0.0012).all()  # the dense network at the rate it trained at


@pytest.mark.slow
def test_structured_gradient_pruning_removes_whole_units_by_their_scores(tmp_path, small_idx_dataset):
    """prune.granularity units with prune.criterion gradient: every hidden layer loses
    ceil(rate x alive units) whole rows per level, chosen by the summed |w * dL/dw| of the
    trained weights on the criterion's seeded batches; the output layer weight by weight.
    The stored masks equal a recomputation from the stored weights and data. The network is
    LeNet at other widths (model.widths, LTH'19's width sweeps)."""
    import math

    import torch
    from lth.nn import criteria, models, pruning
    from lth.nn.data import load
    from lth.nn.training import prepare
    from lth.plan import build, config
    from lth.store import masks, ptfile
    gradient = {"batches": 2, "batch_size": 50, "seed": 3}
    cfg = tiny_config(small_idx_dataset, levels=2, prune={"granularity": "units", "criterion": "gradient",
                                                          "gradient": gradient}, model={"widths": [120, 40]})
    assert run(tmp_path, cfg)["prune"] == 2
    plan = build.build(config.validate(dict(cfg, results=str(tmp_path / "results"))))
    split = prepare(load("fashion_mnist", str(small_idx_dataset)), 200, 0)["train"]
    previous = None
    alive = {"fc1.weight": 120, "fc2.weight": 40}
    for level in (1, 2):
        mask = masks.read(tmp_path / plan.levels[level]["prune"].output("mask"))
        for name, units in alive.items():
            rows = mask[name].any(axis=1)
            assert (mask[name][rows].all(axis=1)).all()  # a unit is kept whole or removed whole
            alive[name] = units - math.ceil(0.2 * units)
            assert rows.sum() == alive[name]
        trained = ptfile.load(tmp_path / plan.levels[level - 1]["train"].output("weights"))
        model = models.build("lenet_300_100", widths=[120, 40])
        model.load_state_dict({k: torch.from_numpy(v) for k, v in trained.items()})
        current = previous or masks.ones_like({n: trained[n].shape for n in model.prunable()})
        scores = criteria.gradient_scores(model, current, split, **gradient)
        again = pruning.prune(scores, current, model.prunable(), "fc3.weight", "layerwise", 0.2, 0.1,
                              granularity="units")
        assert all((again[n] == mask[n]).all() for n in mask)
        assert mask["fc3.weight"].sum() == current["fc3.weight"].sum() - math.ceil(0.1 * current["fc3.weight"].sum())
        previous = mask


@pytest.mark.slow
def test_admm_masks_train_and_feed_the_same_mask_comparison(tmp_path, small_idx_dataset):
    """prune.strategy admm (Zhang et al. 2018): an ordinary mask stage with each layer's
    count of layerwise pruning, after ADMM pulled the weights toward those counts (the
    distance to the sparse set shrinks); fine-tuning starts from ADMM's own weights."""
    import json
    import math

    import pandas as pd
    from lth.plan import build, config
    from lth.store import masks, ptfile
    cfg = tiny_config(small_idx_dataset, levels=2, controls={"fine_tune": True, "random_reinit": True},
                      prune={"strategy": "admm", "admm": {"iterations": "60it", "update_every": "10it", "rho": 0.01}})
    done = run(tmp_path, cfg)
    assert done["admm"] == 2 and "prune" not in done and done["samemask"] == 1
    plan = build.build(config.validate(dict(cfg, results=str(tmp_path / "results"))))
    alive = {"fc1.weight": 235200, "fc2.weight": 30000, "fc3.weight": 1000}
    for level in (1, 2):
        stages = plan.levels[level]
        cut = stages["prune"]
        assert cut.kind == "admm"
        mask = masks.read(tmp_path / cut.output("mask"))
        for name, count in alive.items():
            alive[name] = count - math.ceil((0.1 if name == "fc3.weight" else 0.2) * count)
            assert mask[name].sum() == alive[name]
        history = pd.read_parquet(tmp_path / cut.output("history"))
        for tensor, rows in history.groupby("tensor"):
            assert rows.distance.iloc[-1] < 0.8 * rows.distance.iloc[0], tensor
        weights = ptfile.load(tmp_path / cut.output("weights"))
        assert all((weights[n][~mask[n]] == 0).all() for n in mask)
        start = json.loads((tmp_path / plan.stages[stages["fine_tune"].upstream["start"]].output("start")).read_text())
        assert start["weights"]["file"] == f"admm/{cut.id}/weights.pt"
    same = pd.read_csv(tmp_path / plan.finals["samemask"][0].output("table"))
    assert len(same) == 2 * 3


@pytest.mark.slow
def test_pretraining_on_restricted_data_is_the_lotterys_start(tmp_path, small_idx_dataset):
    """The early-phase paper's §6: the dense network pretrained on random labels or on
    rotations is where the dense training starts and IMP rewinds to; a rotation head goes
    back to theta_0's output layer. Sparse pretraining: theta_0 ⊙ m pretrained with its mask,
    a variant beside the ticket."""
    import json

    import numpy as np
    import pandas as pd
    from lth.plan import build, config
    from lth.store import ptfile
    cfg = tiny_config(small_idx_dataset, levels=1, pretrain={"task": ["random_labels", "rotation"], "length": "10it"})
    done = run(tmp_path, cfg)
    assert done["pretrain"] == 2 and done["train"] == 4
    plan = build.build(config.validate(dict(cfg, results=str(tmp_path / "results"))))
    theta0 = ptfile.load(tmp_path / plan.stages[plan.runs[0].levels[0]["train"].upstream["start"]]
                         .inputs["origin"])
    for run_ in plan.runs:
        dense = run_.levels[0]["train"]
        pre = plan.stages[dense.upstream["start"]]
        assert pre.kind == "pretrain" and pre.settings["pretrain"]["task"] == run_.choices["pretrain.task"]
        start = json.loads((tmp_path / run_.levels[1]["rewind"].output("start")).read_text())
        assert start["weights"]["file"] == f"pretrain/{pre.id}/weights.pt"  # IMP rewinds to the pretrained state
        weights = ptfile.load(tmp_path / pre.output("weights"))
        assert not np.array_equal(weights["fc1.weight"], theta0["fc1.weight"])  # pretrained
        head_reset = np.array_equal(weights["fc3.weight"], theta0["fc3.weight"])
        assert head_reset == (run_.choices["pretrain.task"] == "rotation")
        assert len(pd.read_parquet(tmp_path / pre.output("metrics")))
    sparse = tiny_config(small_idx_dataset, levels=1, pretrain={"task": "rotation", "length": "10it", "sparse": True})
    # the normal IMP lottery from theta_0 (new here) and its level's subnetwork pretrained, then trained
    assert run(tmp_path, sparse) == {"pretrain": 1, "train": 3, "prune": 1, "rewind": 1, "summary": 1, "anatomy": 1,
                                     "correlation": 1}
    plan = build.build(config.validate(dict(sparse, results=str(tmp_path / "results"))))
    level = plan.levels[1]
    pre = plan.stages[level["sparse_pretrained"].upstream["start"]]
    mask = ptfile.load(tmp_path / pre.output("weights"))["fc1.weight"] != 0
    assert mask.sum() == 0.8 * 235200  # theta_0 ⊙ m pretrained with its mask: pruned weights stay 0
    summary = pd.read_parquet(tmp_path / plan.summary.output("table"))
    assert (summary.variant == "sparse_pretrained").sum() == 1


@pytest.mark.slow
def test_trajectory_on_the_loss_contours(tmp_path, small_idx_dataset):
    """Li et al. §7 / Ma et al. Figs. 4-5: the dense network and the level-1 ticket record
    their weights (packed, verified); the trajectory starts at the training's start weights
    and ends at (0, 0), where the grid's loss is the final network's loss on the subset. The
    curvature stage takes the Hessian's eigenvalues at every recorded point."""
    import numpy as np
    import pandas as pd
    import torch
    from lth.nn import models
    from lth.nn.data import load
    from lth.nn.training import Split, evaluate, prepare
    from lth.plan import build, config
    from lth.stages.landscape import subset_indices
    from lth.stages.train import read_trajectory
    from lth.store import masks, ptfile
    cfg = tiny_config(small_idx_dataset, levels=1,
                      trajectory={"levels": [0, 1], "every": "5it", "points": ["2it"], "grid": 5, "examples": 300},
                      curvature={"enabled": True, "k": 2, "examples": 200})
    done = run(tmp_path, cfg)
    assert done["trajectory"] == done["curvature"] == 1
    plan = build.build(config.validate(dict(cfg, results=str(tmp_path / "results"))))
    stage = plan.finals["trajectory"][0]
    points = pd.read_csv(tmp_path / stage.output("points"))
    grid = pd.read_parquet(tmp_path / stage.output("table"))
    train = prepare(load("fashion_mnist", str(small_idx_dataset)), 200, 0)["train"]
    chosen = torch.from_numpy(subset_indices(len(train), 300, 0))
    subset = Split(train.x[chosen], train.y[chosen])
    theta0 = ptfile.load(tmp_path / plan.stages[plan.levels[0]["train"].upstream["start"]].output("weights"))
    for level in (0, 1):
        training = plan.levels[level]["train"]
        recorded = read_trajectory(tmp_path / training.dir / "trajectory.pt")
        assert list(recorded) == [0, 2, 5, 10, 15, 20]
        final = ptfile.load(tmp_path / training.output("weights"))
        assert all(np.array_equal(recorded[20][k], final[k]) for k in final)  # ends at the trained weights
        start = theta0 if level == 0 else {k: v * masks.read(tmp_path / plan.levels[1]["prune"].output("mask"))
                                                  .get(k, 1) for k, v in theta0.items()}
        assert all(np.array_equal(recorded[0][k], start[k]) for k in ("fc1.weight", "fc2.weight"))  # starts at its start
        mine = points[points.train == training.id].sort_values("iteration")
        assert list(mine.iteration) == [0, 2, 5, 10, 15, 20] and (mine.iloc[-1][["pc1", "pc2"]] == 0).all()
        model = models.build("lenet_300_100")
        model.load_state_dict({k: torch.from_numpy(v) for k, v in final.items()})
        loss, _ = evaluate(model, subset)
        at_final = grid[(grid.train == training.id) & (grid.alpha == 0) & (grid.beta == 0)]
        assert len(at_final) == 1 and at_final.loss.iloc[0] == pytest.approx(loss, rel=1e-6)
    assert (tmp_path / stage.output("plot")).stat().st_size > 20_000
    from lth.nn import curvature
    eigen = pd.read_csv(tmp_path / plan.finals["curvature"][0].output("table"))
    assert len(eigen) == 2 * 6 * 3  # networks x points x (k largest + the most negative)
    mask = masks.read(tmp_path / plan.levels[1]["prune"].output("mask"))
    weights = read_trajectory(tmp_path / plan.levels[1]["train"].dir / "trajectory.pt")[5]
    model = models.build("lenet_300_100")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    again = curvature.top_eigenvalues(model, mask, curvature.subset(train, 200, 0), k=2)
    mine = eigen[(eigen.train == plan.levels[1]["train"].id) & (eigen.iteration == 5)].set_index("rank").eigenvalue
    assert [mine[1], mine[2], mine[0]] == pytest.approx([*again["largest"], again["smallest"]], rel=1e-5)
    snakemake(tmp_path, "--report", "report.html")  # both figures in the report, with their captions
    html = (tmp_path / "report.html").read_text()
    for figure in (stage.output("plot"), plan.finals["curvature"][0].output("plot")):
        figure = Path(figure).relative_to(tmp_path)
        assert f'"{figure}": {{"name": "{figure.name}"' in html, figure
    assert "Training trajectories on the loss contours" in html and "Curvature of the training loss" in html
