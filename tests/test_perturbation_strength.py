"""Perturbation strength against accuracy (early-phase paper Fig. 8): the effective std, Pearson
r and its p-value (Student's t by the incomplete beta function, no scipy), the one-seed
message, the plan, and one real tiny workflow with two seeds."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run, snakemake, tiny_config
from lth.report import perturbation as pert


# ---- effective std ----

def test_effective_std_and_mean_pool_the_survivors_of_every_layer():
    f = np.float32
    start = {"a": np.array([[1.0, 0.0, -2.0], [0.5, 0.0, 3.0]], f), "b": np.array([0.25, 0.0, 4.0], f),
             "bias": np.array([9.0], f)}
    perturbed = {"a": np.array([[1.5, 0.0, -1.0], [0.5, 0.0, 1.0]], f), "b": np.array([-0.25, 0.0, 4.0], f),
                 "bias": np.array([100.0], f)}  # not in the mask: never counted
    mask = {"a": np.array([[True, False, True], [True, False, True]]), "b": np.array([True, False, True])}
    # by hand: differences of the survivors 0.5, 1, 0, -2 (a) and -0.5, 0 (b)
    diffs = np.array([0.5, 1.0, 0.0, -2.0, -0.5, 0.0])
    got = pert.effective(perturbed, start, mask)
    assert got["effective_std"] == pytest.approx(np.std(diffs)) and got["effective_mean"] == pytest.approx(-1 / 6)
    assert got["effective_std"] == pytest.approx(math.sqrt(np.mean((diffs + 1 / 6) ** 2)))  # ddof 0


def test_effective_std_against_numpy_on_random_layers():
    rng = np.random.default_rng(3)
    shapes = {"conv": (4, 3, 3, 3), "fc": (10, 36)}
    start = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    mask = {n: rng.random(s) < 0.3 for n, s in shapes.items()}
    perturbed = {n: (w + 0.7 * rng.standard_normal(w.shape)).astype(np.float32) for n, w in start.items()}
    diffs = np.concatenate([(perturbed[n].astype(float) - start[n].astype(float))[mask[n]] for n in shapes])
    got = pert.effective(perturbed, start, mask)
    assert got["effective_std"] == pytest.approx(diffs.std(), rel=1e-12)
    assert got["effective_mean"] == pytest.approx(diffs.mean(), rel=1e-12)
    assert 0.6 < got["effective_std"] < 0.8  # noise of std 0.7
    assert pert.effective(start, start, mask) == {"effective_std": 0.0, "effective_mean": 0.0}


# ---- Pearson r and p ----

def test_pearson_matches_numpy_corrcoef():
    rng = np.random.default_rng(0)
    for n in (3, 5, 14, 200):
        x = rng.standard_normal(n)
        y = -0.6 * x + rng.standard_normal(n)
        assert pert.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert pert.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert math.isnan(pert.pearson([1, 1, 1], [1, 2, 3])) and math.isnan(pert.pearson([1], [2]))


def test_incomplete_beta_closed_forms():
    for x in (0.0, 0.05, 0.3, 0.5, 0.77, 0.999, 1.0):
        assert pert.betainc(1, 1, x) == pytest.approx(x, abs=1e-14)
        assert pert.betainc(3.5, 1, x) == pytest.approx(x ** 3.5, abs=1e-13)  # I_x(a, 1) = x^a
        assert pert.betainc(1, 2.5, x) == pytest.approx(1 - (1 - x) ** 2.5, abs=1e-13)  # I_x(1, b)
        # I_x(1/2, 1/2) = (2/pi) asin(sqrt x): the arcsine distribution
        assert pert.betainc(0.5, 0.5, x) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)), abs=1e-12)


@pytest.mark.parametrize("t", [0.0, 0.1, 0.5, 1.0, 1.96, 3.0, 12.7062, 40.0, -2.5])
def test_t_two_sided_p_against_closed_forms(t):
    a = abs(t)
    # 1 df: Cauchy
    assert pert.t_two_sided(t, 1) == pytest.approx(1 - 2 * math.atan(a) / math.pi, abs=1e-12)
    # 2 df
    assert pert.t_two_sided(t, 2) == pytest.approx(1 - a / math.sqrt(2 + t * t), abs=1e-12)
    # 3 df: F(t) = 1/2 + (1/pi) (t / (sqrt(3) (1 + t^2/3)) + atan(t / sqrt(3)))
    cdf = 0.5 + (a / (math.sqrt(3) * (1 + a * a / 3)) + math.atan(a / math.sqrt(3))) / math.pi
    assert pert.t_two_sided(t, 3) == pytest.approx(2 * (1 - cdf), abs=1e-12)
    # many df: the normal distribution
    assert pert.t_two_sided(t, 1e7) == pytest.approx(math.erfc(a / math.sqrt(2)), abs=1e-6)


def test_t_two_sided_known_quantiles_and_the_papers_numbers():
    # table values: the two-sided 5 % points of t
    assert pert.t_two_sided(12.7062, 1) == pytest.approx(0.05, abs=1e-5)
    assert pert.t_two_sided(2.2281, 10) == pytest.approx(0.05, abs=1e-4)
    assert pert.t_two_sided(2.0423, 30) == pytest.approx(0.05, abs=1e-4)
    # Fig. 8 of the early-phase paper: r = -0.672, p = 0.008 and r = -0.726, p = 0.003; both fit
    # n = 14 perturbations (12 degrees of freedom)
    assert round(pert.pearson_p(-0.672, 14), 3) == 0.008
    assert round(pert.pearson_p(-0.726, 14), 3) == 0.003
    assert pert.pearson_p(0.5, 14) == pert.pearson_p(-0.5, 14)
    assert pert.pearson_p(1.0, 5) == 0.0 and math.isnan(pert.pearson_p(0.9, 2))
    r, n = 0.3, 9
    assert pert.pearson_p(r, n) == pytest.approx(pert.t_two_sided(r * math.sqrt(7 / (1 - r * r)), 7))


def test_p_of_uncorrelated_data_is_uniform():
    """Under H0 (independent normal x and y) the p-values are uniform: about 5 % below 0.05."""
    rng = np.random.default_rng(1)
    ps = np.array([pert.pearson_p(pert.pearson(*rng.standard_normal((2, 8))), 8) for _ in range(4000)])
    assert abs(np.mean(ps < 0.05) - 0.05) < 0.012 and abs(np.mean(ps < 0.5) - 0.5) < 0.03


# ---- the table, r and p, and the one-seed message ----

def rows(seeds, variants=(("noise_0.5", 0.5, 0.90), ("noise_2", 2.0, 0.80), ("permute_layer", 1.2, 0.85),
                          ("shuffle_sign", 0.8, 0.88))):
    out = []
    for i, seed in enumerate(seeds):
        for variant, std, acc in variants:
            out.append({"lottery": "imp", "level": 2, "weights_remaining_pct": 64.0, "variant": variant,
                        "kind": variant.split("_")[0] if variant.startswith("noise") else variant,
                        "noise": float(variant[6:]) if variant.startswith("noise") else None, "seed": seed,
                        "effective_std": std + 0.01 * i, "effective_mean": 0.001, "test_accuracy": acc + 0.02 * i,
                        "early_stop_test_accuracy": acc})
        out.append({"lottery": "imp", "level": 2, "weights_remaining_pct": 64.0, "variant": "ticket",
                    "kind": "unperturbed", "noise": None, "seed": seed, "effective_std": 0.0, "effective_mean": 0.0,
                    "test_accuracy": 0.95, "early_stop_test_accuracy": 0.95})
    return out


def test_two_seeds_give_r_and_p_of_the_variant_means():
    frame = pert.table(rows(["init.seed=0 train.seed=0", "init.seed=0 train.seed=1"]))
    assert list(frame.columns) == pert.COLUMNS
    means = pert.means(frame)
    assert len(frame) == 10 + 5 and list(means.variant) == ["noise_0.5", "noise_2", "permute_layer", "shuffle_sign",
                                                             "ticket"]
    assert set(means.seeds) == {2} and set(frame[frame.seed != "mean"].seeds) == {1}
    noise = means.set_index("variant").loc["noise_2"]
    assert noise.effective_std == pytest.approx(2.005) and noise.test_accuracy == pytest.approx(0.81)
    assert noise.test_accuracy_std == pytest.approx(np.std([0.80, 0.82], ddof=1))
    result = pert.correlations(frame)
    assert list(result.columns) == pert.CORRELATION_COLUMNS and len(result) == 1
    row = result.iloc[0]
    points = means[means.variant != "ticket"]  # the unperturbed ticket is a reference, not a point
    assert row.perturbations == 4 and row.seeds == 2 and row.note == ""
    assert row.r == pytest.approx(np.corrcoef(points.effective_std, points.test_accuracy)[0, 1], abs=1e-12)
    assert row.r < -0.9 and row.p == pytest.approx(pert.pearson_p(row.r, 4))
    assert pert.describe(row) == f"r = {row.r:.3f}, p = {row.p:.3g} (4 perturbations, 2 seeds)"


def test_one_seed_says_so_instead_of_numbers(tmp_path):
    frame = pert.table(rows(["init.seed=0 train.seed=0"]))
    result = pert.correlations(frame)
    row = result.iloc[0]
    assert row.note == pert.ONE_SEED == "one seed: r and p need >= 2 seeds"
    assert math.isnan(row.r) and math.isnan(row.p) and row.seeds == 1
    assert pert.describe(row) == "one seed: r and p need >= 2 seeds (4 perturbations, 1 seed)"
    result.to_csv(tmp_path / "correlation.csv", index=False)
    again = pd.read_csv(tmp_path / "correlation.csv")
    assert again.note.item() == pert.ONE_SEED and again.r.isna().all()
    pert.plot(frame, result, tmp_path / "one.png")
    assert (tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"
    # two seeds but two perturbations: two points always lie on a line
    few = pert.correlations(pert.table(rows(["a", "b"], variants=(("noise_1", 1.0, 0.9), ("noise_2", 2.0, 0.8)))))
    assert few.note.item() == pert.FEW_POINTS and math.isnan(few.r.item())


def test_plot_with_several_panels(tmp_path):
    frame = pert.table(rows(["a", "b"]) + [{**r, "level": 3} for r in rows(["a"])])
    result = pert.correlations(frame)
    assert list(result.level) == [2, 3] and list(result.note) == ["", pert.ONE_SEED]
    pert.plot(frame, result, tmp_path / "two.png")
    assert (tmp_path / "two.png").stat().st_size > 1000


# ---- the plan ----

def build(**overrides):
    from lth.plan import build as plan
    from lth.plan import config
    return plan.build(config.validate({"levels": 3, **overrides}))


def test_planned_only_with_perturbations():
    plain = build()
    assert plain.final("perturbation") is None and "perturbation" not in {s.kind for s in plain.stages.values()}
    assert build(perturb={"kinds": ["noise"], "levels": [9]}).final("perturbation") is None  # nothing perturbed
    p = build(train={"seed": [0, 1]}, perturb={"kinds": ["noise", "shuffle_sign"], "noise": [0.5, 2], "levels": [2]})
    stage = p.final("perturbation")
    entries = stage.layout["entries"]
    assert len(entries) == 2 * 3  # seeds x variants
    assert {e["seed"] for e in entries} == {"init.seed=0 train.seed=0", "init.seed=0 train.seed=1"}
    assert {(e["variant"], e["kind"], e["noise"]) for e in entries} == {("noise_0.5", "noise", 0.5),
                                                                       ("noise_2", "noise", 2), ("shuffle_sign", "shuffle_sign", None)}
    assert {e["lottery"] for e in entries} == {"imp"} and {e["level"] for e in entries} == {2}
    for e in entries:
        run = next(r for r in p.runs if r.label == e["run"])
        assert run.levels[2][e["variant"]].id == e["train"] and run.levels[2]["train"].id == e["ticket"]
        perturbed = p.stages[e["perturb"]]
        assert stage.inputs[f"{e['perturb']}_perturbed"] == perturbed.output("start")
        # the unperturbed start is read as the rewind's source and mask, not through start.json
        assert stage.inputs[f"{e['rewind']}_source"] == p.stages[e["rewind"]].inputs["init"]
        assert stage.inputs[f"{e['rewind']}_mask"] == p.stages[e["rewind"]].inputs["mask"]
    assert not any(path.endswith("start.json") for path in stage.inputs.values())
    assert set(stage.upstream.values()) <= set(p.stages)


# ---- a real tiny workflow with two seeds ----

@pytest.mark.slow
def test_a_tiny_workflow_with_two_seeds(tmp_path, small_idx_dataset):
    from lth.plan import build as plan
    from lth.plan import config
    from lth.report.summary import read_summary
    from lth.store import ptfile
    from lth.store.starts import load_start
    from lth.store.weights import load_mask, load_weights, read_model_info
    raw = tiny_config(small_idx_dataset, levels=1, train={"seed": [0, 1]},
                      perturb={"kinds": ["noise", "permute_layer", "shuffle_sign"], "noise": [0.5, 2]})
    counts = run(tmp_path, raw)
    # per seed: the dense and level-1 tickets and 4 perturbations; one shared init
    assert counts == {"init": 1, "train": 2 * (2 + 4), "prune": 2, "rewind": 2, "perturb": 8, "summary": 1,
                      "correlation": 1, "anatomy": 2, "perturbation": 1}
    p = plan.build(config.validate(raw))
    stage = p.final("perturbation")
    frame = pd.read_csv(tmp_path / stage.output("table"))
    assert list(frame.columns) == pert.COLUMNS
    summary = read_summary(tmp_path / p.summary.output("table"))
    per_seed = frame[frame.seed != "mean"]
    assert len(per_seed) == 2 * 5  # seeds x (4 perturbations + the ticket)
    for run_ in p.runs:
        level = run_.levels[1]
        info = read_model_info(tmp_path / level["train"].inputs["model"])
        start = load_start(tmp_path / level["rewind"].output("start"), info)
        mask = load_mask(tmp_path / level["prune"].output("mask"), info)
        for variant in ("noise_0.5", "noise_2", "permute_layer", "shuffle_sign"):
            perturbed = ptfile.load(tmp_path / p.stages[level[variant].upstream["start"]].output("start"))
            diffs = np.concatenate([(perturbed[n].astype(float) - start[n].astype(float))[mask[n]] for n in mask])
            got = per_seed[(per_seed.variant == variant) & per_seed.seed.str.endswith(f"train.seed={run_.choices['train.seed']}")]
            assert got.effective_std.item() == pytest.approx(diffs.std(), rel=1e-5)
            metrics = pd.read_parquet(tmp_path / level[variant].output("metrics"))
            test = metrics[metrics.split == "test"]
            assert got.test_accuracy.item() == pytest.approx(test[test.iteration == test.iteration.max()].accuracy.item(),
                                                             abs=1e-6)
            assert got.test_accuracy.item() == pytest.approx(
                summary[(summary.run == run_.label) & (summary.variant == variant)].final_test_accuracy.item(), abs=1e-6)
    means = pert.means(frame).set_index("variant")
    # noise of n init stds: its effective std grows with n; shuffles keep the start's multiset
    assert means.loc["noise_2"].effective_std > 3 * means.loc["noise_0.5"].effective_std
    assert means.loc["ticket"].effective_std == 0 and set(means.seeds) == {2}
    result = pd.read_csv(tmp_path / stage.output("correlation"))
    points = means.drop("ticket")
    assert result.level.tolist() == [1] and result.seeds.item() == 2 and result.perturbations.item() == 4
    r = np.corrcoef(points.effective_std, points.test_accuracy)[0, 1]
    assert result.r.item() == pytest.approx(r, abs=1e-5)
    assert result.p.item() == pytest.approx(pert.pearson_p(r, 4), rel=1e-4)
    assert (tmp_path / stage.output("plot")).read_bytes()[:4] == b"\x89PNG"
    # the anatomy's magnitude table of the same run, level 1 survivors against the files
    anatomy = next(a for a in p.anatomy if a.layout["trains"][1] == p.runs[0].levels[1]["train"].id)
    grown = pd.read_csv(tmp_path / anatomy.output("magnitude"))
    level = p.runs[0].levels[1]
    info = read_model_info(tmp_path / level["train"].inputs["model"])
    start = load_start(tmp_path / level["rewind"].output("start"), info)
    mask = load_mask(tmp_path / level["prune"].output("mask"), info)
    trained = load_weights(tmp_path / level["train"].output("weights"), info)
    a = np.concatenate([np.abs(start[n][mask[n]]) for n in mask]).astype(float)
    b = np.concatenate([np.abs(trained[n][mask[n]]) for n in mask]).astype(float)
    row = grown[(grown.level == 1) & (grown.layer == "all")].iloc[0]
    assert row.survivors == a.size and row.start_magnitude == pytest.approx(a.mean(), rel=1e-5)
    assert row.final_magnitude == pytest.approx(b.mean(), rel=1e-5)
    assert row.grew_pct == pytest.approx(100 * np.mean(b > a), abs=1e-4)
    assert (tmp_path / anatomy.output("magnitude_plot")).read_bytes()[:4] == b"\x89PNG"
    # the HTML report holds both new figures and both tables under their categories
    snakemake(tmp_path, "--report", "report.html")
    html = (tmp_path / "report.html").read_text()
    shown = [stage.output(name) for stage, names in ((stage, ("plot", "correlation")),
                                                      *((a, ("magnitude", "magnitude_plot")) for a in p.anatomy))
             for name in names]
    for path in shown:
        assert f'"{path}": {{"name": "{Path(path).name}"' in html, path
    assert "Perturbations" in html and ("LTH&#x27;19 appendix F.5" in html or "LTH'19 appendix F.5" in html)
