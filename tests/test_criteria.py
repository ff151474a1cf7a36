import math

import numpy as np
import pytest

from lth.nn import criteria, pruning, training

LENET = {"fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}
CONV = {"convs.0.weight": (16, 3, 3, 3), "convs.1.weight": (32, 16, 3, 3),
        "fc1.weight": (64, 512), "fc3.weight": (10, 64)}
RATES = {"fc1.weight": 0.2, "fc2.weight": 0.2, "fc3.weight": 0.1}


def random_weights(shapes, seed):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


def ones(shapes):
    return {n: np.ones(s, bool) for n, s in shapes.items()}


def l1_smallest(weights, mask, count):
    """The `count` alive units with the smallest L1 norms (surviving weights only), computed
    with numpy's sort on (norm, index) pairs: the set removed, ties to the lower index."""
    w = np.abs(weights.astype(np.float64)) * mask
    norms = w.reshape(w.shape[0], -1).sum(axis=1)
    alive = [i for i in range(w.shape[0]) if mask[i].any()]
    ranked = sorted(alive, key=lambda i: (norms[i], i))
    return set(ranked[:count])


def removed_units(before, after):
    """Units whose weights all went from alive to pruned; asserts every other change is none."""
    gone = before & ~after
    assert not np.any(after & ~before), "a pruned weight came back"
    rows = gone.reshape(gone.shape[0], -1)
    units = {i for i in range(rows.shape[0]) if rows[i].any()}
    for i in units:  # a whole unit: every weight that was alive in it is now pruned
        assert not after[i].any(), f"unit {i} only partly pruned"
    return units


def test_units_remove_whole_rows_with_the_smallest_l1_norms():
    w = random_weights(LENET, 1)
    mask = ones(LENET)
    new = criteria.structured_layerwise(w, mask, RATES, "fc3.weight", "units")
    for name in ("fc1.weight", "fc2.weight"):
        units = removed_units(mask[name], new[name])
        alive = LENET[name][0]
        assert len(units) == math.ceil(RATES[name] * alive)  # 60 of 300, 20 of 100
        assert units == l1_smallest(w[name], mask[name], len(units))
    # the output layer weight by weight: exactly layerwise's mask, 100 of 1000 weights
    assert np.array_equal(new["fc3.weight"], pruning.layerwise(w, mask, {"fc3.weight": 0.1})["fc3.weight"])
    assert int((~new["fc3.weight"]).sum()) == 100
    assert any(0 < new["fc3.weight"][i].sum() < 100 for i in range(10)), "output layer pruned in rows"


def test_unit_scores_count_only_surviving_weights_and_ties_go_to_the_lower_index():
    w = {"h": np.array([[9.0, 0.1], [1.0, 1.0], [0.5, 0.5], [1.0, 1.0], [0.1, 3.0]]),
         "out": np.array([[0.3, 0.2]])}
    mask = {"h": np.array([[False, True], [True, True], [True, True], [True, True], [True, True]]),
            "out": np.ones((1, 2), bool)}
    # alive sums: 0.1 (row 0: its 9.0 is pruned), 2, 1, 2, 3.1; 5 alive, 0.6 -> 3 removed:
    # rows 0, 2 and the first of the tied rows 1, 3
    new = criteria.structured_layerwise(w, mask, {"h": 0.6, "out": 0.5}, "out", "units")
    assert new["h"].any(axis=1).tolist() == [False, False, False, True, True]
    assert new["out"].tolist() == [[True, False]]


def test_filters_prune_conv_filters_and_fully_connected_weight_by_weight():
    w = random_weights(CONV, 2)
    mask = ones(CONV)
    rates = {"convs.0.weight": 0.25, "convs.1.weight": 0.3, "fc1.weight": 0.2, "fc3.weight": 0.1}
    new = criteria.structured_layerwise(w, mask, rates, "fc3.weight", "filters")
    for name in ("convs.0.weight", "convs.1.weight"):
        units = removed_units(mask[name], new[name])  # filter i = w[i], all of [in, kh, kw]
        assert len(units) == math.ceil(rates[name] * CONV[name][0])
        assert units == l1_smallest(w[name], mask[name], len(units))
    expected = pruning.layerwise(w, mask, {"fc1.weight": 0.2, "fc3.weight": 0.1})
    for name in ("fc1.weight", "fc3.weight"):
        assert np.array_equal(new[name], expected[name])
    assert not all(new["fc1.weight"][i].all() or not new["fc1.weight"][i].any() for i in range(64))
    # "units" prunes the hidden fully connected tensor in rows instead
    rows = criteria.structured_layerwise(w, mask, rates, "fc3.weight", "units")["fc1.weight"]
    assert len(removed_units(mask["fc1.weight"], rows)) == math.ceil(0.2 * 64)


def test_weights_granularity_is_layerwise():
    w, mask = random_weights(CONV, 3), ones(CONV)
    rates = {n: 0.2 for n in CONV}
    new = criteria.structured_layerwise(w, mask, rates, "fc3.weight", "weights")
    expected = pruning.layerwise(w, mask, rates)
    assert all(np.array_equal(new[n], expected[n]) for n in CONV)


def test_two_rounds_keep_removed_units_removed():
    mask = ones(LENET)
    alive = {n: LENET[n][0] for n in ("fc1.weight", "fc2.weight")}
    removed_before = {n: set() for n in alive}
    for round_ in range(2):
        w = random_weights(LENET, 10 + round_)  # new weights each round: the old ranking no longer holds
        new = criteria.structured_layerwise(w, mask, RATES, "fc3.weight", "units")
        for name in alive:
            units = removed_units(mask[name], new[name])
            assert not units & removed_before[name], "a removed unit was chosen again"
            assert len(units) == math.ceil(round(RATES[name] * alive[name], 9))
            assert units == l1_smallest(w[name], mask[name], len(units))
            alive[name] -= len(units)
            assert int(new[name].any(axis=1).sum()) == alive[name]
            dead = sorted(removed_before[name])
            assert not new[name][dead].any(), "a unit removed in round 1 came back"
            removed_before[name] |= units
        out_before = int(mask["fc3.weight"].sum())
        assert out_before - int(new["fc3.weight"].sum()) == pruning.prune_count(0.1, out_before)
        mask = new
    assert alive == {"fc1.weight": 300 - 60 - 48, "fc2.weight": 100 - 20 - 16}


def test_units_of_a_partly_pruned_unit_count_only_when_alive():
    # a mask from earlier weight-wise rounds: row 0 fully pruned (not alive), row 1 half
    w = {"h": np.arange(1.0, 13.0).reshape(4, 3)}
    mask = {"h": np.array([[0, 0, 0], [1, 0, 1], [1, 1, 1], [1, 1, 1]], bool)}
    new = criteria.structured_layerwise(w, mask, {"h": 0.5}, "out", "units")  # 3 alive -> 2 removed
    assert new["h"].any(axis=1).tolist() == [False, False, False, True]


def test_unit_counts_and_unknown_granularity():
    assert criteria.unit_counts((300, 784), "units", False) == 300
    assert criteria.unit_counts((300, 784), "filters", False) is None
    assert criteria.unit_counts((64, 3, 3, 3), "filters", False) == 64
    assert criteria.unit_counts((64, 3, 3, 3), "units", False) == 64
    assert criteria.unit_counts((64, 3, 3, 3), "weights", False) is None
    assert criteria.unit_counts((10, 100), "units", True) is None
    with pytest.raises(ValueError, match="granularity"):
        criteria.unit_counts((10, 100), "channels", False)
    with pytest.raises(ValueError, match="granularity"):
        criteria.structured_layerwise(random_weights(LENET, 0), ones(LENET), RATES, "fc3.weight", "neurons")


def test_the_structured_part_does_not_import_torch():
    import subprocess
    import sys
    from pathlib import Path
    src = Path(__file__).resolve().parents[1] / "src"
    code = ("import sys; sys.path.insert(0, %r); from lth.nn import criteria; "
            "assert 'torch' not in sys.modules, 'torch imported'" % str(src))
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- gradient scores ----

def softmax_regression():
    import torch
    from torch import nn
    from lth.nn.models import PrunableModel

    class Softmax(PrunableModel):
        output_layer = "fc.weight"

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))

    model = Softmax()
    model.init_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():  # nonzero biases, so the closed form's b matters
        model.fc.bias.copy_(torch.randn(10, generator=torch.Generator().manual_seed(1)))
    return model


def closed_form(model, mask, split, batches, batch_size, seed):
    """|w * g| with g = (softmax(X (W m)^T + b) - onehot(y))^T X / n in float64 numpy, on the
    same examples drawn independently here (a seeded permutation without replacement)."""
    import torch
    from lth.nn.training import derived_seed
    g = torch.Generator().manual_seed(derived_seed(seed, 0, training.SCORE_STREAM))
    index = torch.randperm(len(split), generator=g)[:batches * batch_size].numpy()
    x = split.x.numpy().reshape(len(split), -1)[index].astype(np.float64)
    y = split.y.numpy()[index]
    w = model.fc.weight.detach().numpy().astype(np.float64)
    wm = w * mask if mask is not None else w
    z = x @ wm.T + model.fc.bias.detach().numpy().astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    grad = p.T @ x / len(y)
    return np.abs(w * grad)


def test_gradient_scores_match_the_softmax_regression_closed_form(splits):
    import torch
    model = softmax_regression()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask = {"fc.weight": np.random.default_rng(0).random((10, 784)) < 0.5}
    train = splits["train"]
    for m in (None, mask):
        scores = criteria.gradient_scores(model, m, train, 4, 50, seed=7)
        assert list(scores) == ["fc.weight"]
        expected = closed_form(model, None if m is None else m["fc.weight"], train, 4, 50, 7)
        if m is not None:
            assert np.all(scores["fc.weight"][~m["fc.weight"]] == 0.0)  # exactly
            expected = np.where(m["fc.weight"], expected, 0.0)
        # float32 forward vs float64 closed form: 1e-6 of each score, plus float32 noise on
        # the few scores far below the typical one (cancellation in their gradient sum)
        np.testing.assert_allclose(scores["fc.weight"], expected, rtol=1e-6, atol=1e-6 * expected.max())
        assert np.median(np.abs(scores["fc.weight"] - expected)[expected > 0]
                         / expected[expected > 0]) < 1e-6
    dense = criteria.gradient_scores(model, None, train, 4, 50, seed=7)["fc.weight"]
    masked = criteria.gradient_scores(model, mask, train, 4, 50, seed=7)["fc.weight"]
    assert not np.allclose(dense[mask["fc.weight"]], masked[mask["fc.weight"]]), \
        "the mask did not change the network scored"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    assert all(p.grad is None for p in model.parameters())


def test_gradient_scores_in_float64_match_to_1e_6_relative(splits):
    import torch
    from lth.nn.training import Split
    model = softmax_regression().double()
    train = Split(splits["train"].x.double(), splits["train"].y)
    mask = {"fc.weight": np.random.default_rng(1).random((10, 784)) < 0.3}
    scores = criteria.gradient_scores(model, mask, train, 3, 40, seed=2)["fc.weight"]
    expected = np.where(mask["fc.weight"], closed_form(model, mask["fc.weight"], train, 3, 40, 2), 0.0)
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=0)
    assert np.all(scores[~mask["fc.weight"]] == 0.0) and np.all(scores[mask["fc.weight"]] >= 0)
    assert scores.dtype == np.float64


def test_gradient_scores_follow_their_seed(splits):
    model = softmax_regression()
    a = criteria.gradient_scores(model, None, splits["train"], 2, 30, seed=3)["fc.weight"]
    b = criteria.gradient_scores(model, None, splits["train"], 2, 30, seed=3)["fc.weight"]
    c = criteria.gradient_scores(model, None, splits["train"], 2, 30, seed=4)["fc.weight"]
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_score_batches_are_distinct_examples_apart_from_the_training_order():
    from lth.nn.training import epoch_order
    index = criteria.score_batches(1000, 5, 40, seed=0)
    assert tuple(index.shape) == (5, 40)
    assert len(set(index.flatten().tolist())) == 200  # without replacement
    assert not np.array_equal(index.flatten().numpy(), epoch_order(1000, 0, 0)[:200].numpy()), \
        "the score batches are the training's first batches of epoch 0"
    with pytest.raises(ValueError, match="distinct"):
        criteria.score_batches(100, 3, 40, seed=0)


def test_gradient_scores_of_lenet_match_a_separate_autograd_pass(splits):
    """LeNet-300-100 with half its weights masked (its dense weights still in the model):
    the scores equal |w * g| from a plain backward pass on a masked copy."""
    import copy

    import torch
    from torch.nn import functional as F
    from lth.nn import models
    from lth.nn.training import apply_mask, derived_seed
    model = models.build("lenet_300_100", seed=0)
    rng = np.random.default_rng(4)
    mask = {n: rng.random(tuple(model.get_parameter(n).shape)) < 0.5 for n in model.prunable()}
    train = splits["train"]
    scores = criteria.gradient_scores(model, mask, train, 2, 64, seed=5)

    reference = copy.deepcopy(model).double()
    apply_mask(reference, mask)
    g = torch.Generator().manual_seed(derived_seed(5, 0, training.SCORE_STREAM))
    index = torch.randperm(len(train), generator=g)[:128]
    loss = F.cross_entropy(reference(train.x[index].double()), train.y[index])  # 2 equal batches: one mean
    loss.backward()
    for name in model.prunable():
        w = model.get_parameter(name).detach().double().numpy()
        expected = np.abs(w * reference.get_parameter(name).grad.numpy()) * mask[name]
        got = scores[name]
        assert np.all(got[~mask[name]] == 0.0)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.max())
        assert np.abs(got - expected).max() <= 1e-5 * expected.max()


def test_gradient_scores_leave_batchnorm_and_the_training_flag_alone():
    import torch
    from torch import nn
    from lth.nn.models import PrunableModel
    from lth.nn.training import Split

    class Tiny(PrunableModel):
        output_layer = "fc.weight"

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = torch.relu(self.bn(self.conv(x[:, None])))
            return self.fc(x.mean(dim=(2, 3)))

    model = Tiny()
    model.init_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.bn.running_mean.fill_(0.3)
        model.bn.running_var.fill_(2.0)
    model.train()
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(40, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask = {"conv.weight": np.ones((4, 1, 3, 3), bool), "fc.weight": np.ones((3, 4), bool)}
    mask["conv.weight"][0] = False
    scores = criteria.gradient_scores(model, mask, split, 2, 10, seed=0)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    assert all(p.grad is None for p in model.parameters())
    assert set(scores) == {"conv.weight", "fc.weight"}
    assert np.all(scores["conv.weight"][0] == 0) and np.all(scores["conv.weight"][1:].sum(axis=(1, 2, 3)) > 0)
    # the scores feed the structured criterion: the masked filter is not alive, one more goes
    new = criteria.structured_layerwise(scores, mask, {"conv.weight": 0.25, "fc.weight": 0.0}, "fc.weight", "filters")
    assert int(new["conv.weight"].any(axis=(1, 2, 3)).sum()) == 2
