import numpy as np
import pytest
import torch

from conftest import FASHION, RECIPE

from lth.nn import admm, models, pruning
from lth.nn.divergence import Diverged
from lth.nn.training import apply_mask, evaluate, train

REAL_DATA = (FASHION / "train-images-idx3-ubyte.gz").exists()
ADMM = {"rho": 1e-2, "iterations": "400it", "update_every": "50it"}


def reference_keep(values, surviving, count):
    """Independent top-count: survivors sorted by descending |v|, among equal |v| the later
    position first (lth.nn.pruning drops the earlier one first)."""
    flat, alive = np.abs(values).ravel(), np.flatnonzero(surviving.ravel())
    order = np.lexsort((-alive, -flat[alive]))  # last key is the primary one
    keep = np.zeros(values.size, dtype=bool)
    keep[alive[order[:count]]] = True
    return keep.reshape(values.shape)


@pytest.mark.parametrize("seed", range(5))
def test_keep_largest_and_project_match_an_independent_top_count(seed):
    rng = np.random.default_rng(seed)
    shapes = {"a": (7, 9), "b": (40,), "c": (3, 2, 5)}
    # integers in -3..3: many ties, equal magnitudes of both signs
    values = {n: rng.integers(-3, 4, s).astype(np.float32) for n, s in shapes.items()}
    mask = {n: rng.random(s) < 0.6 for n, s in shapes.items()}
    counts = {n: int(rng.integers(0, mask[n].sum() + 1)) for n in ("a", "b")}  # "c" unconstrained
    for n, count in counts.items():
        keep = admm.keep_largest(values[n], mask[n], count)
        assert keep.dtype == bool and keep.shape == shapes[n]
        assert keep.sum() == count and not (keep & ~mask[n]).any()
        np.testing.assert_array_equal(keep, reference_keep(values[n], mask[n], count))
    for as_torch in (False, True):
        given = {n: torch.from_numpy(v) for n, v in values.items()} if as_torch else values
        projected = admm.project(given, mask, counts)
        for n, count in counts.items():
            out = projected[n].numpy() if as_torch else projected[n]
            assert isinstance(projected[n], torch.Tensor) == as_torch
            keep = reference_keep(values[n], mask[n], count)
            np.testing.assert_array_equal(out, np.where(keep, values[n], 0))
        assert projected["c"] is given["c"]  # not in counts: no constraint
    with pytest.raises(ValueError, match="cannot keep"):
        admm.keep_largest(values["a"], mask["a"], int(mask["a"].sum()) + 1)


def test_a_missing_mask_means_all_survive():
    values = {"w": np.array([[3.0, -1.0], [-3.0, 2.0]], dtype=np.float32)}
    cut = admm.hard_cut(values, None, {"w": 2})
    np.testing.assert_array_equal(cut["w"], [[True, False], [True, False]])
    # |3| == |-3|: a tie broken by position, the later one kept first
    np.testing.assert_array_equal(admm.hard_cut(values, {}, {"w": 1})["w"], [[False, False], [True, False]])


@pytest.fixture(scope="module")
def start(splits):
    """A briefly trained LeNet-300-100, its weights half pruned by magnitude (an IMP-like
    mask), and counts of 20 % of each prunable tensor (40 % of its survivors)."""
    model = models.build("lenet_300_100", 0)
    train(model, None, splits, {**RECIPE, "iterations": "300it", "eval_every": "300it"})
    weights = {n: model.state_dict()[n].numpy().copy() for n in model.prunable()}
    mask = pruning.layerwise(weights, {n: np.ones(w.shape, bool) for n, w in weights.items()},
                             {n: 0.5 for n in weights})
    counts = {n: int(0.2 * w.size) for n, w in weights.items()}
    return {k: v.clone() for k, v in model.state_dict().items()}, mask, counts


def admm_run(splits, start, **settings):
    state, mask, counts = start
    model = models.build("lenet_300_100", 0)
    model.load_state_dict(state)
    lines = []
    history = admm.run(model, mask, splits, RECIPE, {**ADMM, **settings}, counts, log=lines.append)
    return model, history, lines


@pytest.fixture(scope="module")
def admm_result(splits, start):
    return admm_run(splits, start)


def test_admm_drives_weights_into_the_sparse_set_deterministically(splits, start, admm_result):
    _, mask, counts = start
    model, history, lines = admm_result
    state = model.state_dict()
    for name, keep in mask.items():
        assert torch.count_nonzero(state[name][~torch.from_numpy(keep)]) == 0, name
    # rows: iteration 0, the 7 dual updates (50..350; none after the last step), the end
    assert sorted({r["iteration"] for r in history}) == list(range(0, 401, 50))
    assert len(history) == 9 * len(counts) and len(lines) == 9
    rhos = [r["rho"] for r in history if r["tensor"] == "fc1.weight"]
    assert rhos[:2] == [1e-2, 1e-2] and rhos[-1] == pytest.approx(1e-2 * 1.3 ** 7)
    assert history[0]["loss"] is None and all(np.isfinite(r["loss"]) for r in history[len(counts):])

    control = admm_run(splits, start, rho=0.0)[1]  # the same training without the penalty
    for name in counts:
        rows = [r for r in history if r["tensor"] == name]
        plain = [r for r in control if r["tensor"] == name]
        assert rows[0]["distance"] > 0.3  # a trained dense-ish tensor is far from 20 % nonzeros
        assert rows[-1]["distance"] < 0.6 * rows[0]["distance"], name
        assert plain[-1]["distance"] > 0.9 * plain[0]["distance"], name  # the penalty does it

    again, history_again, _ = admm_run(splits, start)
    assert all(torch.equal(state[k], again.state_dict()[k]) for k in state)
    assert history == history_again


def test_hard_cut_keeps_the_counts_and_the_network_retrains(splits, start, admm_result):
    state, mask, counts = start
    model = admm_result[0]
    weights = {n: model.state_dict()[n].numpy() for n in counts}
    cut = admm.hard_cut(weights, mask, counts)
    for name, count in counts.items():
        assert cut[name].sum() == count and not (cut[name] & ~mask[name]).any()
        np.testing.assert_array_equal(cut[name], reference_keep(weights[name], mask[name], count))

    def cut_loss(state_dict, keep):
        net = models.build("lenet_300_100", 0)
        net.load_state_dict(state_dict)
        apply_mask(net, keep)
        return evaluate(net, splits["validation"])

    admm_loss, _ = cut_loss(model.state_dict(), cut)
    oneshot = admm.hard_cut({n: state[n].numpy() for n in counts}, mask, counts)  # magnitude cut, no ADMM
    oneshot_loss, _ = cut_loss(state, oneshot)
    if REAL_DATA:  # the point of ADMM: its weights lose less to the same cut
        assert admm_loss < oneshot_loss

    model = models.build("lenet_300_100", 0)  # a copy: the fixture's model stays as ADMM left it
    model.load_state_dict(admm_result[0].state_dict())
    result = train(model, cut, splits, {**RECIPE, "iterations": "100it", "eval_every": "100it"})
    final = {r["split"]: r for r in result.metrics if r["iteration"] == 100}
    assert all(np.isfinite(r["loss"]) for r in final.values())
    for name, keep in cut.items():
        assert torch.count_nonzero(model.state_dict()[name][~torch.from_numpy(keep)]) == 0
    if REAL_DATA:
        assert final["test"]["accuracy"] > 0.5  # chance is 0.1


def test_a_diverging_admm_names_its_rho(splits, start):
    state, mask, counts = start
    model = models.build("lenet_300_100", 0)
    model.load_state_dict(state)
    # plain SGD steps W -= lr * rho * (W - Z + U) with lr * rho = 1e3 blow up within ~15 steps
    sgd = {**RECIPE, "optimizer": "sgd", "lr": 0.1, "momentum": 0.0}
    with pytest.raises(Diverged, match=r"rho 10000") as caught:
        admm.run(model, mask, splits, sgd, {"rho": 1e4, "iterations": "40it", "update_every": "40it"}, counts)
    assert "\n" not in str(caught.value)


def test_augmented_admm_is_seeded(splits, start):
    short = {"iterations": "20it", "update_every": "10it"}
    runs = [admm_run(splits, start, **short)[0].state_dict() for _ in range(2)]
    state, mask, counts = start
    for _ in range(2):
        model = models.build("lenet_300_100", 0)
        model.load_state_dict(state)
        admm.run(model, mask, splits, {**RECIPE, "augment": True}, {**ADMM, **short}, counts)
        runs.append(model.state_dict())
    plain, _, augmented, again = runs
    assert all(torch.equal(augmented[k], again[k]) for k in plain)
    assert not torch.equal(augmented["fc1.weight"], plain["fc1.weight"])
