import numpy as np
import pytest

from lth.nn.perturb import KINDS, perturb

RANDOM_KINDS = ("permute_layer", "permute_unit", "shuffle_sign", "noise")


def network(seed: int = 0, density: float = 0.5):
    """(start = theta_k ⊙ m, init = theta_0, mask) for a conv layer and a linear layer with
    biases; pruned positions of start are -0.0 (as multiplication would leave them) to check
    that the output still has +0.0 there."""
    rng = np.random.default_rng(seed)
    shapes = {"conv1.weight": (4, 3, 3, 3), "conv1.bias": (4,), "fc1.weight": (6, 8), "fc1.bias": (6,)}
    init = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    mask = {n: rng.random(shapes[n]) < density for n in ("conv1.weight", "fc1.weight")}
    start = {n: (w + 0.3 * rng.standard_normal(w.shape)).astype(np.float32) for n, w in init.items()}
    for n, keep in mask.items():
        start[n] = np.where(keep, start[n], np.float32(-0.0)).astype(np.float32)
    return start, init, mask


def assert_mask_kept(out, start, mask):
    assert list(out) == list(start)
    for name, value in out.items():
        assert value.dtype == start[name].dtype and value.shape == start[name].shape
        if name in mask:
            pruned = value[~mask[name]]
            assert np.all(pruned == 0) and not np.any(np.signbit(pruned))
        else:
            assert value.tobytes() == start[name].tobytes()
            assert value is not start[name]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_keeps_the_mask_the_dtype_and_the_other_tensors(kind):
    start, init, mask = network()
    assert_mask_kept(perturb(kind, start, init, mask, seed=3), start, mask)


def test_signs_from_0_by_hand():
    start = {"w": np.array([[0.5, -0.2, 0.0, 0.3, 0.7]], dtype=np.float32)}
    init = {"w": np.array([[-1.0, -2.0, 3.0, 0.0, -0.0]], dtype=np.float32)}
    mask = {"w": np.array([[True, True, False, True, True]])}
    out = perturb("signs_from_0", start, init, mask, seed=0)["w"]
    # theta_0 of 0 or -0.0 counts as +
    np.testing.assert_array_equal(out, np.array([[-0.5, -0.2, 0.0, 0.3, 0.7]], np.float32))


def test_magnitudes_from_0_by_hand():
    start = {"w": np.array([[0.5, -0.2, 0.0, 0.0]], dtype=np.float32)}
    init = {"w": np.array([[-1.0, 2.0, 3.0, -4.0]], dtype=np.float32)}
    mask = {"w": np.array([[True, True, False, True]])}
    out = perturb("magnitudes_from_0", start, init, mask, seed=0)["w"]
    # the last survivor is exactly 0 in theta_k: it takes theta_0's sign
    np.testing.assert_array_equal(out, np.array([[1.0, -2.0, 0.0, -4.0]], np.float32))
    assert not np.signbit(out[0, 2])


def test_sign_variants_swap_one_source_on_random_tensors():
    start, init, mask = network(1)
    signs = perturb("signs_from_0", start, init, mask, seed=0)
    mags = perturb("magnitudes_from_0", start, init, mask, seed=0)
    for name, keep in mask.items():
        np.testing.assert_array_equal(np.abs(signs[name]), np.abs(start[name]))
        np.testing.assert_array_equal(np.sign(signs[name][keep]), np.sign(init[name][keep]))
        np.testing.assert_array_equal(np.abs(mags[name][keep]), np.abs(init[name][keep]))
        np.testing.assert_array_equal(np.sign(mags[name][keep]), np.sign(start[name][keep]))


def test_permute_layer_keeps_each_layers_multiset_and_mixes_units():
    start, init, mask = network(2)
    out = perturb("permute_layer", start, init, mask, seed=5)
    for name, keep in mask.items():
        assert sorted(out[name][keep]) == sorted(start[name][keep])
        assert not np.array_equal(out[name], start[name])
    # across the layer, not only within rows: some row's multiset changes
    keep = mask["fc1.weight"]
    assert any(sorted(out["fc1.weight"][i][keep[i]]) != sorted(start["fc1.weight"][i][keep[i]])
               for i in range(keep.shape[0]))


def test_permute_unit_keeps_each_rows_and_filters_multiset():
    start, init, mask = network(3, density=0.7)
    out = perturb("permute_unit", start, init, mask, seed=5)
    for name, keep in mask.items():
        for unit in range(keep.shape[0]):  # a row of fc1, a filter [in, kh, kw] of conv1
            assert sorted(out[name][unit][keep[unit]]) == sorted(start[name][unit][keep[unit]])
        assert not np.array_equal(out[name], start[name])


def test_shuffle_sign_keeps_every_sign_and_the_positive_and_negative_multisets():
    start, init, mask = network(4, density=0.8)
    start["fc1.weight"][0, :] = np.where(mask["fc1.weight"][0], 0.0, -0.0)  # surviving zeros stay put
    out = perturb("shuffle_sign", start, init, mask, seed=5)
    for name, keep in mask.items():
        a, b = start[name][keep], out[name][keep]
        np.testing.assert_array_equal(np.sign(a), np.sign(b))
        assert sorted(a[a > 0]) == sorted(b[b > 0]) and sorted(a[a < 0]) == sorted(b[b < 0])
        assert not np.array_equal(a, b)


def test_noise_has_the_scale_of_the_whole_layers_init_std():
    """sigma_l is the std of the whole layer's theta_0, pruned positions included: scaling
    the pruned init values by 3 makes it about sqrt(5) times the survivors' std. With 30,000
    survivors the empirical std of the added noise is within about 0.5 % (tolerance: 2 %)."""
    rng = np.random.default_rng(6)
    keep = rng.random((200, 300)) < 0.5
    init = {"w": np.where(keep, 1.0, 3.0).astype(np.float32) * rng.standard_normal((200, 300)).astype(np.float32),
            "b": np.ones(200, dtype=np.float32)}
    start = {"w": np.where(keep, init["w"] * 0.9, 0.0).astype(np.float32), "b": init["b"] * 2}
    sigma = np.std(init["w"].astype(np.float64))
    out = perturb("noise", start, init, {"w": keep}, seed=7, noise=0.5)
    added = out["w"][keep].astype(np.float64) - start["w"][keep]
    assert np.std(added) == pytest.approx(0.5 * sigma, rel=0.02)
    assert abs(np.mean(added)) < 0.03 * sigma
    assert np.all(added != 0)
    assert_mask_kept(out, start, {"w": keep})


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_same_seed_same_bytes_other_seed_other_result(kind):
    start, init, mask = network(8)
    a = perturb(kind, start, init, mask, seed=11)
    b = perturb(kind, start, init, mask, seed=11)
    c = perturb(kind, start, init, mask, seed=12)
    assert all(a[n].tobytes() == b[n].tobytes() for n in start)
    assert any(not np.array_equal(a[n], c[n]) for n in mask)


def test_unknown_kind_raises_naming_the_allowed_ones():
    start, init, mask = network()
    with pytest.raises(ValueError, match="allowed: signs_from_0, magnitudes_from_0"):
        perturb("reinit", start, init, mask, seed=0)
