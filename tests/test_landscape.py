"""The loss-landscape stage (Li et al. 2018): filter-normalised directions restricted to the
mask, a symmetric grid whose centre is the trained network, and the stage through Snakemake."""
import numpy as np
import pytest
import torch

from conftest import run, tiny_config

from lth.plan import config, build as plan
from lth.stages import landscape
from lth.nn import models
from lth.nn.training import Split, evaluate


def _weights(seed=0):
    """A conv weight, a linear weight, their biases, BatchNorm tensors: what a model holds."""
    rng = np.random.default_rng(seed)
    return {"conv.weight": rng.normal(size=(6, 3, 3, 3)).astype(np.float32),
            "bn.weight": np.ones(6, np.float32), "bn.bias": np.zeros(6, np.float32),
            "bn.running_mean": rng.normal(size=6).astype(np.float32),
            "bn.num_batches_tracked": np.array(5),
            "fc.weight": rng.normal(size=(4, 54)).astype(np.float32),
            "fc.bias": rng.normal(size=4).astype(np.float32)}


PERTURBED = ["conv.weight", "fc.weight"]


def _mask(weights, seed=1):
    rng = np.random.default_rng(seed)
    mask = {name: rng.random(weights[name].shape) < 0.4 for name in PERTURBED}
    mask["conv.weight"][2] = False  # a filter with no survivor
    mask["fc.weight"][1] = False    # a unit with no incoming weight
    return mask


def _masked(weights, mask):
    return {k: np.where(mask[k], v, 0).astype(v.dtype) if k in mask else v for k, v in weights.items()}


def test_coordinates_are_symmetric_with_the_trained_network_at_the_centre():
    for grid, span in ((3, 1.0), (11, 1.0), (21, 0.7), (101, 3.3), (7, 0.1)):
        c = landscape.coordinates(grid, span)
        assert len(c) == grid and c[0] == -span and c[-1] == span
        assert np.array_equal(c, -c[::-1]) and c[grid // 2] == 0.0
        assert np.allclose(np.diff(c), 2 * span / (grid - 1))


def test_directions_are_zero_off_the_mask_and_on_biases_and_batchnorm():
    weights = _weights()
    mask = _mask(weights)
    sparse = _masked(weights, mask)
    for d in landscape.directions(sparse, PERTURBED, mask, seed=3):
        assert set(d) == set(weights) and all(d[k].dtype == weights[k].dtype for k in d)
        for name in PERTURBED:
            assert not d[name][~mask[name]].any()
            assert np.count_nonzero(d[name]) == np.count_nonzero(mask[name])  # nonzero on every survivor
        for name in ("bn.weight", "bn.bias", "bn.running_mean", "bn.num_batches_tracked", "fc.bias"):
            assert not d[name].any()


@pytest.mark.parametrize("masked", [False, True])
def test_each_filter_and_row_of_a_direction_has_its_weights_norm(masked):
    weights = _weights()
    mask = _mask(weights) if masked else None
    w = _masked(weights, mask) if masked else weights
    d1, d2 = landscape.directions(w, PERTURBED, mask, seed=0)
    for d in (d1, d2):
        for name in PERTURBED:
            # conv: one norm per output filter (6, 3, 3, 3); linear: one per output unit (row)
            expected = np.linalg.norm(w[name].astype(np.float64).reshape(len(w[name]), -1), axis=1)
            found = np.linalg.norm(d[name].astype(np.float64).reshape(len(d[name]), -1), axis=1)
            assert found.shape == (w[name].shape[0],)
            assert np.allclose(found, expected, rtol=1e-6, atol=0)
    if masked:  # the empty filter and the unit without inputs get a zero slice
        assert not d1["conv.weight"][2].any() and not d1["fc.weight"][1].any()


def test_directions_are_deterministic_for_a_seed_and_one_draw_serves_every_level():
    weights = _weights()
    a1, a2 = landscape.directions(weights, PERTURBED, None, seed=7)
    b1, b2 = landscape.directions(weights, PERTURBED, None, seed=7)
    c1, _ = landscape.directions(weights, PERTURBED, None, seed=8)
    for name in PERTURBED:
        assert np.array_equal(a1[name], b1[name]) and np.array_equal(a2[name], b2[name])
        assert not np.allclose(a1[name], a2[name]) and not np.allclose(a1[name], c1[name])
    # a subnetwork's direction is the same draw restricted to its mask, rescaled per slice
    mask = _mask(weights)
    s1, _ = landscape.directions(_masked(weights, mask), PERTURBED, mask, seed=7)
    draw = np.random.default_rng(np.random.SeedSequence([7, 1]))
    raw = {name: draw.standard_normal(weights[name].shape) for name in PERTURBED}
    for name in PERTURBED:
        for row in range(len(raw[name])):
            keep = mask[name][row]
            if keep.any():
                ratio = s1[name][row][keep] / raw[name][row][keep]
                assert np.allclose(ratio, ratio[0], rtol=1e-5) and ratio[0] > 0


def test_the_grids_centre_is_the_trained_network_and_the_mask_holds():
    model = models.build("lenet_300_100")
    weights = {k: v.numpy() for k, v in models.build("lenet_300_100", 1).state_dict().items()}
    prunable = model.prunable()
    mask = {n: np.random.default_rng(i).random(weights[n].shape) < 0.3 for i, n in enumerate(prunable)}
    weights = _masked(weights, mask)
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(300, 784, generator=g), torch.randint(0, 10, (300,), generator=g))
    d1, d2 = landscape.directions(weights, prunable, mask, seed=0)
    coords = landscape.coordinates(5, 1.0)
    rows = landscape.evaluate_grid(model, weights, d1, d2, coords, split)
    assert [(r["alpha"], r["beta"]) for r in rows] == [(a, b) for a in coords for b in coords]
    # the model is left holding the trained weights
    assert all(np.array_equal(v.numpy(), weights[k]) for k, v in model.state_dict().items())
    loss, accuracy = evaluate(model, split)
    centre = rows[len(rows) // 2]
    assert (centre["alpha"], centre["beta"]) == (0.0, 0.0)
    assert centre["loss"] == loss and centre["accuracy"] == accuracy  # exactly, not approximately
    assert len({r["loss"] for r in rows}) == len(rows)  # every other point moved
    # a point off the centre: the pruned weights stayed zero, and it is W + alpha d1 + beta d2
    alpha, beta = coords[0], coords[-1]
    moved = {k: torch.from_numpy(weights[k] + np.float32(alpha) * d1[k] + np.float32(beta) * d2[k]) for k in weights}
    model.load_state_dict(moved)
    assert all(not moved[n].numpy()[~mask[n]].any() for n in prunable)
    assert evaluate(model, split)[0] == pytest.approx(rows[len(coords) - 1]["loss"], rel=1e-5)


def test_batchnorm_keeps_its_trained_values_and_running_statistics():
    model = models.build("resnet20", width=0.25)
    weights = {k: v.numpy().copy() for k, v in models.build("resnet20", 1, width=0.25).state_dict().items()}
    for k in weights:  # running statistics as training would leave them
        if k.endswith("running_var"):
            weights[k] = np.full_like(weights[k], 2.0)
    d1, d2 = landscape.directions(weights, model.prunable(), None, seed=0)
    assert all(not d1[k].any() for k in weights if k not in model.prunable())
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g))
    rows = landscape.evaluate_grid(model, weights, d1, d2, landscape.coordinates(3, 0.5), split)
    loss, _ = evaluate(model, split)
    assert rows[4]["loss"] == loss
    assert np.array_equal(model.state_dict()["bn.running_var"].numpy(), weights["bn.running_var"])


def test_the_training_subset_is_a_seeded_fixed_draw():
    a = landscape.subset_indices(1000, 100, 0)
    assert np.array_equal(a, landscape.subset_indices(1000, 100, 0))
    assert len(np.unique(a)) == 100 and np.all(np.diff(a) > 0) and a.max() < 1000
    assert not np.array_equal(a, landscape.subset_indices(1000, 100, 1))
    assert np.array_equal(landscape.subset_indices(50, 100, 0), np.arange(50))


def _landscapes(**overrides):
    cfg = config.validate({"levels": 3, **overrides})
    return cfg, plan.build(cfg).finals.get("landscape", [])


def test_planning_one_stage_per_lottery_whose_id_follows_its_own_keys():
    assert _landscapes()[1] == []  # off by default
    cfg, stages = _landscapes(landscape={"levels": [3, 0]})
    (stage,) = stages
    p = plan.build(cfg)
    assert [t["level"] for t in stage.layout["trains"]] == [0, 3]
    assert [t["train"] for t in stage.layout["trains"]] == [p.levels[0]["train"].id, p.levels[3]["train"].id]
    assert set(stage.inputs) == {"model", "weights_0", "weights_3", "mask_3"}
    assert stage.inputs["mask_3"] == p.levels[3]["train"].inputs["mask"]
    same = {"landscape": {"levels": [0, 3]}}
    assert _landscapes(**same, instability={"alphas": 5}, analysis={"rp_fractions": [0.1]})[1][0].id == stage.id
    assert _landscapes(**same, train={"eval_every": "500it"})[1][0].id != stage.id  # other trainings upstream
    for change in ({"grid": 5}, {"span": 0.5}, {"seed": 1}, {"train_subset": 500}):
        assert _landscapes(landscape={"levels": [0, 3], **change})[1][0].id != stage.id, change
    assert _landscapes(**same, data={"split_seed": 1})[1][0].id != stage.id
    assert len(_landscapes(landscape={"levels": [0, 2]}, prune={"rate": [0.2, 0.3]})[1]) == 2
    # levels beyond `levels` are skipped, with a note
    cfg, stages = _landscapes(landscape={"levels": [0, 7]})
    assert [t["level"] for t in stages[0].layout["trains"]] == [0]
    assert any("landscape.levels 7" in note for note in config.notes(cfg))


@pytest.mark.slow
def test_the_landscape_stage_runs_through_snakemake(tmp_path, small_idx_dataset):
    import pandas as pd

    from lth.nn import data
    from lth.store import ptfile
    from lth.nn.training import prepare
    raw = tiny_config(small_idx_dataset, levels=1, landscape={"levels": [0, 1], "grid": 5, "train_subset": 200})
    assert run(tmp_path, raw) == {"init": 1, "train": 2, "prune": 1, "rewind": 1, "summary": 1, "correlation": 1,
                                  "anatomy": 1, "landscape": 1}
    cfg = config.validate(raw)
    p = plan.build(cfg)
    (stage,) = p.finals["landscape"]
    grid = pd.read_parquet(tmp_path / stage.output("table"))
    assert list(grid.columns) == list(landscape.GRID_COLUMNS)
    assert grid.groupby("level").size().to_dict() == {0: 25, 1: 25}
    assert grid.groupby("level").weights_remaining_pct.first().round(1).to_dict() == {0: 100.0, 1: 80.0}
    assert np.isfinite(grid.loss).all() and (tmp_path / stage.output("plot")).read_bytes()[:4] == b"\x89PNG"
    # the centre of each panel is the trained network's loss on the same subset
    splits = prepare(data.load("fashion_mnist", str(small_idx_dataset)), 200, 0)
    chosen = torch.from_numpy(landscape.subset_indices(len(splits["train"]), 200, 0))
    subset = Split(splits["train"].x[chosen], splits["train"].y[chosen])
    model = models.build("lenet_300_100")
    for level in (0, 1):
        weights = ptfile.load(tmp_path / p.levels[level]["train"].output("weights"))
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        centre = grid[(grid.level == level) & (grid.alpha == 0) & (grid.beta == 0)]
        assert centre.loss.item() == pytest.approx(evaluate(model, subset)[0], abs=1e-6)
    # cached like any stage; only its own keys rerun it
    assert run(tmp_path, raw) == {}
    raw["landscape"]["span"] = 0.5
    assert run(tmp_path, raw) == {"landscape": 1}
