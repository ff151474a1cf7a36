"""lth.nn.restricted: the restricted-information pretraining splits, checked against
independent numpy implementations (np.rot90 per image; block means and bilinear upsampling
written out)."""
import numpy as np
import pytest
import torch

from lth.nn import restricted
from lth.nn.training import Split


def test_random_labels_seeded_uniform_and_unlike_the_truth():
    classes, n = 10, 10_000
    y = torch.arange(n, dtype=torch.int64) % classes
    a = restricted.random_labels(y, classes, seed=3)
    assert a.dtype == y.dtype and a.device == y.device and a.shape == y.shape
    assert torch.equal(a, restricted.random_labels(y, classes, seed=3))  # fixed per example
    assert (a != restricted.random_labels(y, classes, seed=4)).float().mean() > 0.8
    counts = torch.bincount(a, minlength=classes).numpy()
    assert counts.min() > 0.9 * n / classes and counts.max() < 1.1 * n / classes  # ~4.4 sigma
    assert abs((a != y).float().mean().item() - (1 - 1 / classes)) < 0.02


def test_random_labels_keep_dtype():
    y = torch.zeros(50, dtype=torch.int32)
    assert restricted.random_labels(y, 3, 0).dtype == torch.int32


@pytest.mark.parametrize("shape", [(12, 5, 5), (12, 3, 4, 4)])
def test_rotate_matches_numpy(shape):
    x = torch.randn(shape)
    n = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0, 1, 1, 3, 2])
    want = np.stack([np.rot90(img, k, axes=(-2, -1)) for img, k in zip(x.numpy(), n.tolist())])
    np.testing.assert_array_equal(restricted.rotate(x, n).numpy(), want)


def test_rotate_rejects_odd_turns_of_a_non_square_image():
    x = torch.randn(2, 4, 6)
    assert restricted.rotate(x, torch.tensor([0, 2])).shape == x.shape
    with pytest.raises(ValueError):
        restricted.rotate(x, torch.tensor([1, 0]))


def test_rotation_labels_seeded_uniform_and_applied():
    x = torch.randn(4000, 1, 2, 2)  # tiny images: the rotation must match the label drawn
    xr, labels = restricted.rotation(x, seed=7)
    assert labels.dtype == torch.int64 and labels.shape == (4000,)
    xr2, labels2 = restricted.rotation(x, seed=7)
    assert torch.equal(labels, labels2) and torch.equal(xr, xr2)
    assert (labels != restricted.rotation(x, seed=8)[1]).float().mean() > 0.6
    counts = torch.bincount(labels, minlength=4).numpy()
    assert counts.min() > 900 and counts.max() < 1100
    assert torch.equal(xr, restricted.rotate(x, labels))
    # the rotation labels are drawn apart from the random labels (different second key)
    assert not torch.equal(labels, restricted.random_labels(labels, 4, seed=7))


def _upsample_bilinear(small: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear over the last two axes, align_corners=False: output pixel d samples input
    coordinate (d + 0.5) * in / out - 0.5, clamped at 0 below, neighbours clamped at the edge."""
    def weights(size_in, size_out):
        src = np.maximum((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0.0)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, size_in - 1)
        return lo, hi, src - lo

    r0, r1, fr = weights(small.shape[-2], out_h)
    c0, c1, fc = weights(small.shape[-1], out_w)
    rows = small[..., r0, :] * (1 - fr)[:, None] + small[..., r1, :] * fr[:, None]
    return rows[..., c0] * (1 - fc) + rows[..., c1] * fc


def _blur_numpy(x: np.ndarray, f: int) -> np.ndarray:
    *lead, h, w = x.shape
    small = x.reshape(*lead, h // f, f, w // f, f).mean(axis=(-3, -1))
    return _upsample_bilinear(small, h, w)


@pytest.mark.parametrize("shape,factor", [((3, 8, 12), 4), ((2, 3, 8, 8), 4), ((2, 2, 6, 6), 2)])
def test_blur_matches_numpy(shape, factor):
    x = torch.randn(shape, dtype=torch.float64).float()
    got = restricted.blur(x, factor)
    assert got.dtype == torch.float32 and got.shape == x.shape
    np.testing.assert_allclose(got.numpy(), _blur_numpy(x.numpy().astype(np.float64), factor), atol=1e-5)


def test_blur_of_a_constant_is_that_constant_and_factor_must_divide():
    x = torch.full((2, 3, 8, 8), -1.25)
    assert torch.allclose(restricted.blur(x, 4), x, atol=1e-6)
    with pytest.raises(ValueError, match="10x8.*factor 4"):
        restricted.blur(torch.zeros(1, 10, 8), 4)


def test_restrict_shapes_input_unchanged_and_composition():
    x = torch.randn(40, 3, 8, 8)
    y = torch.arange(40) % 10
    split = Split(x.clone(), y.clone())
    for task in restricted.TASKS:
        out = restricted.restrict(split, task, seed=1, num_classes=10)
        assert out is not split and out.x.shape == x.shape and out.y.shape == y.shape
        assert out.x.dtype == torch.float32 and out.y.dtype == torch.int64
        assert torch.equal(split.x, x) and torch.equal(split.y, y)
        if task in restricted.HEAD_CLASSES:
            assert int(out.y.max()) < restricted.HEAD_CLASSES[task]
    blurred = restricted.restrict(split, "blur", 1, 10)
    assert torch.equal(blurred.y, y) and torch.equal(blurred.x, restricted.blur(x, 4))
    both = restricted.restrict(split, "rotation_blur", 1, 10)
    rotated = restricted.restrict(split, "rotation", 1, 10)
    assert torch.equal(both.y, rotated.y)
    assert torch.equal(both.x, restricted.rotate(restricted.blur(x, 4), both.y))
    assert torch.equal(rotated.x, restricted.rotate(x, rotated.y))
    assert torch.equal(restricted.restrict(split, "random_labels", 1, 10).x, x)
    with pytest.raises(ValueError, match="unknown"):
        restricted.restrict(split, "jigsaw", 1, 10)
