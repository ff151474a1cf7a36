import math

import numpy as np
import pytest

from lth.store import masks
from lth.nn import pruning

LENET = {"fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}
PRUNABLE = list(LENET)


def random_weights(seed):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in LENET.items()}


def test_lenet_weights_remaining_after_rounds_3_7_15_18():
    """Frankle & Carbin 2019: 20 % of hidden, 10 % of output weights per round leaves
    51.3 %, 21.1 %, 3.6 %, 1.8 % of LeNet-300-100's 266,200 weights after 3, 7, 15, 18 rounds."""
    mask = masks.ones_like(LENET)
    remaining = {}
    for round_ in range(1, 19):
        mask = pruning.prune(random_weights(round_), mask, PRUNABLE, "fc3.weight", "layerwise", 0.2, 0.1)
        kept, total = masks.counts(mask)
        assert total == 266_200
        remaining[round_] = round(100 * kept / total, 1)
    assert [remaining[r] for r in (3, 7, 15, 18)] == [51.3, 21.1, 3.6, 1.8]


def test_each_round_prunes_the_rate_of_survivors_per_layer():
    mask = masks.ones_like(LENET)
    for round_ in range(3):
        before = {n: int(m.sum()) for n, m in mask.items()}
        new = pruning.prune(random_weights(round_), mask, PRUNABLE, "fc3.weight", "layerwise", 0.2, 0.1)
        for name in LENET:
            rate = 0.1 if name == "fc3.weight" else 0.2
            assert before[name] - int(new[name].sum()) == math.ceil(round(rate * before[name], 9))
            assert not np.any(new[name] & ~mask[name]), "a pruned weight came back"
        mask = new


def test_the_smallest_surviving_magnitudes_go_first():
    w = {"a": np.array([[0.5, -0.1, 0.3, -0.9, 0.05]], dtype=np.float32)}
    mask = {"a": np.array([[True, True, True, True, False]])}
    new = pruning.layerwise(w, mask, {"a": 0.5})  # 4 survivors -> prune 2: -0.1 and 0.3
    assert new["a"].tolist() == [[True, False, False, True, False]]


def test_ties_are_broken_by_position():
    w = {"a": np.array([0.2, 0.1, 0.1, 0.1, 0.3], dtype=np.float32)}
    new = pruning.layerwise(w, {"a": np.ones(5, bool)}, {"a": 0.4})  # prune 2 of the three 0.1s
    assert new["a"].tolist() == [True, False, False, True, True]


def test_global_ranks_hidden_layers_together_and_output_alone():
    w = {"h1": np.array([1.0, 2.0, 3.0, 4.0]), "h2": np.array([0.1, 0.2, 5.0, 6.0]),
         "out": np.array([0.01, 9.0])}
    mask = {k: np.ones(v.shape, bool) for k, v in w.items()}
    new = pruning.prune(w, mask, ["h1", "h2", "out"], "out", "global", 0.25, 0.5)
    assert new["h1"].tolist() == [True] * 4       # 2 of 8 hidden pruned: both from h2
    assert new["h2"].tolist() == [False, False, True, True]
    assert new["out"].tolist() == [False, True]


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown pruning strategy"):
        pruning.prune(random_weights(0), masks.ones_like(LENET), PRUNABLE, "fc3.weight", "random", 0.2, 0.1)


def test_random_mask_keeps_each_layers_count_and_follows_its_seed():
    rng = np.random.default_rng(5)
    mask = {n: rng.random(s) < 0.3 for n, s in LENET.items()}
    a, b, c = pruning.random_like(mask, 1), pruning.random_like(mask, 1), pruning.random_like(mask, 2)
    for name in LENET:
        assert a[name].sum() == mask[name].sum() and a[name].shape == mask[name].shape
        assert np.array_equal(a[name], b[name]) and not np.array_equal(a[name], c[name])
        assert not np.array_equal(a[name], mask[name])


def test_one_shot_reaches_each_levels_iterative_sparsity_per_layer():
    weights = random_weights(42)
    iterative = masks.ones_like(LENET)
    for level in range(1, 8):
        iterative = pruning.prune(random_weights(level), iterative, PRUNABLE, "fc3.weight", "layerwise", 0.2, 0.1)
        oneshot = pruning.prune(weights, masks.ones_like(LENET), PRUNABLE, "fc3.weight", "layerwise", 0.2, 0.1,
                                rounds=level)
        for name in LENET:
            assert abs(int(oneshot[name].sum()) - int(iterative[name].sum())) <= 1
        # and it is the magnitude cut of the dense weights: every survivor outweighs every pruned one
        for name in LENET:
            w = np.abs(weights[name])
            assert w[oneshot[name]].min() >= w[~oneshot[name]].max()


def test_conv_layers_take_the_conv_rate():
    rates = pruning.layer_rates(["c1", "c2", "fc", "out"], "out", 0.2, 0.1, 0.15, {"c1", "c2"})
    assert rates == {"c1": 0.15, "c2": 0.15, "fc": 0.2, "out": 0.1}
    w = {"c": np.arange(1, 2 * 3 * 3 * 3 + 1, dtype=np.float32).reshape(2, 3, 3, 3),
         "fc": np.arange(1, 21, dtype=np.float32).reshape(4, 5), "out": np.ones((2, 4), np.float32)}
    mask = {k: np.ones(v.shape, bool) for k, v in w.items()}
    new = pruning.prune(w, mask, ["c", "fc", "out"], "out", "layerwise", 0.2, 0.5, conv_rate=0.1)
    assert [int((~new[k]).sum()) for k in ("c", "fc", "out")] == [math.ceil(5.4), 4, 4]


@pytest.mark.parametrize("rate, conv_rate, pruned", [(0.0, 0.2, "conv"), (0.2, 0.0, "fc")])
def test_a_rate_of_zero_never_prunes_that_layer_type(rate, conv_rate, pruned):
    """LTH'19's Conv-2/4/6 ablations: conv-only pruning (rate 0: the fully connected hidden
    layers are never pruned) and FC-only pruning (conv_rate 0), on Conv-2's real shapes."""
    from lth.nn import models
    state = models.build("conv2", 0).state_dict()
    prunable = models.build("conv2", 0).prunable()
    weights = {n: state[n].numpy() for n in prunable}
    mask = masks.ones_like({n: w.shape for n, w in weights.items()})
    for _ in range(3):
        mask = pruning.prune(weights, mask, prunable, "fc3.weight", "layerwise", rate, 0.0, conv_rate)
    for name in prunable:
        conv = weights[name].ndim == 4
        kept, size = int(mask[name].sum()), mask[name].size
        if name == "fc3.weight" or (pruned == "conv") != conv:
            assert kept == size, name  # never pruned
        else:
            expected = size
            for _ in range(3):
                expected -= math.ceil(round(0.2 * expected, 9))
            assert kept == expected, name


@pytest.mark.slow
def test_frozen_hidden_layers_in_a_real_workflow(tmp_path, small_idx_dataset):
    """prune.rate 0: a tiny real workflow prunes only the output layer, level after level,
    and the hidden layers' masks stay full (their weights train unmasked)."""
    from conftest import run, tiny_config
    from lth.plan import build, config
    cfg = tiny_config(small_idx_dataset, levels=2, prune={"rate": 0, "output_rate": 0.1})
    assert run(tmp_path, cfg) == {"init": 1, "train": 3, "prune": 2, "rewind": 2, "summary": 1, "anatomy": 1,
                                  "correlation": 1}
    plan = build.build(config.validate(dict(cfg, results=str(tmp_path / "results"))))
    for level, out_kept in ((1, 900), (2, 810)):
        mask = masks.read(tmp_path / plan.levels[level]["prune"].output("mask"))
        assert mask["fc1.weight"].all() and mask["fc2.weight"].all()
        assert int(mask["fc3.weight"].sum()) == out_kept
