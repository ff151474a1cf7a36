"""Training trajectories on the PCA plane (Li et al. 2018, section 7): the directions are
the top principal directions of the differences to the final weights, the projection puts
the final weights at the origin, the evaluation grid passes through it exactly, and the
figures (trajectory contours, 3-D landscape surfaces) are written atomically."""
import numpy as np
import pandas as pd
import pytest

from lth.report import trajectory
from lth.stages import landscape


def _walk(n=12, d=40, seed=0):
    """A noisy path of n + 1 points in R^d converging to a final point."""
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((n, d)) * np.linspace(1.0, 0.1, n)[:, None]
    return np.vstack([np.zeros(d), np.cumsum(steps, axis=0)]) + rng.standard_normal(d)


def test_directions_and_explained_variance_match_an_independent_svd():
    points = _walk()
    result = trajectory.pca_directions(points)
    m = points[:-1] - points[-1]
    centred = m - m.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    for k in range(2):
        d = result["directions"][k]
        assert np.isclose(np.linalg.norm(d), 1.0)
        assert abs(float(d @ vt[k])) == pytest.approx(1.0, abs=1e-10)  # the same line, either sign
    assert abs(float(result["directions"][0] @ result["directions"][1])) < 1e-12
    np.testing.assert_allclose(result["explained"], s[:2] ** 2 / np.sum(s ** 2), rtol=1e-12)
    assert 0 < result["explained"][1] <= result["explained"][0] < 1


def test_the_final_point_is_the_origin_and_the_start_projects_on_the_directions():
    points = _walk(seed=3)
    result = trajectory.pca_directions(points)
    coords, directions = result["coords"], result["directions"]
    assert coords.shape == (len(points), 2)
    assert coords[-1].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(coords[0], [(points[0] - points[-1]) @ directions[k] for k in range(2)], rtol=1e-12)
    np.testing.assert_allclose(coords, (points - points[-1]) @ directions.T, rtol=1e-12, atol=1e-12)
    assert (coords[0] < 0).all()  # the sign convention: the start on the negative side of each axis


def test_the_signs_are_deterministic_when_the_inputs_rows_flip():
    points = _walk(seed=5)
    once, again = trajectory.pca_directions(points), trajectory.pca_directions(points.copy())
    np.testing.assert_array_equal(once["directions"], again["directions"])
    mirrored = trajectory.pca_directions(-points)  # mirrored weights: directions mirror, coordinates do not
    np.testing.assert_allclose(mirrored["directions"], -once["directions"], atol=1e-10)
    np.testing.assert_allclose(mirrored["coords"], once["coords"], atol=1e-10)


def test_a_trajectory_in_a_plane_is_explained_fully_and_reconstructed_exactly():
    rng = np.random.default_rng(7)
    d = 30
    basis, _ = np.linalg.qr(rng.standard_normal((d, 2)))  # orthonormal columns
    final = rng.standard_normal(d)
    planar = rng.standard_normal((9, 2)) * [3.0, 1.0]
    points = np.vstack([final + planar @ basis.T, final])
    result = trajectory.pca_directions(points)
    assert result["explained"].sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(points[-1] + result["coords"] @ result["directions"], points, atol=1e-12)
    # the directions span the plane: projecting the basis on them keeps it whole
    np.testing.assert_allclose(result["directions"].T @ (result["directions"] @ basis), basis, atol=1e-12)


def test_too_short_a_trajectory_is_refused():
    with pytest.raises(ValueError, match="n >= 2"):
        trajectory.pca_directions(np.zeros((2, 5)))


@pytest.mark.parametrize("grid", [3, 7, 12, 31])
def test_the_plane_contains_the_final_weights_and_covers_the_trajectory_with_the_margin(grid):
    coords = trajectory.pca_directions(_walk(seed=11))["coords"]
    alpha, beta = trajectory.plane(coords, grid, margin=0.2)
    for values, column in ((alpha, coords[:, 0]), (beta, coords[:, 1])):
        assert len(values) == grid and np.all(np.diff(values) > 0)
        assert 0.0 in values.tolist() and values[np.argmin(np.abs(values))] == 0.0
        np.testing.assert_allclose(np.diff(values), np.diff(values)[0], rtol=1e-9)
        low, high = min(column.min(), 0.0), max(column.max(), 0.0)
        extent = high - low
        assert values[0] <= low - 0.2 * extent * (1 - 1e-12) and values[-1] >= high + 0.2 * extent * (1 - 1e-12)
        step = values[1] - values[0]
        assert values[-1] - values[0] <= 1.4 * extent + step + 1e-12  # not more than one step too wide


def test_a_grid_too_small_to_hold_0_and_both_sides_is_refused():
    with pytest.raises(ValueError, match="at least 3"):
        trajectory.plane(np.array([[-1.0, -1.0], [0.0, 0.0]]), 2)


def test_a_degenerate_axis_gets_the_other_axis_extent():
    coords = np.array([[-2.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    alpha, beta = trajectory.plane(coords, 5)
    assert 0.0 in beta.tolist() and beta[-1] - beta[0] >= 2.0


def _surface(levels, grid=9):
    values = landscape.coordinates(grid, 1.0)
    return pd.DataFrame([{"level": level, "weights_remaining_pct": 100 * 0.8 ** level, "alpha": a, "beta": b,
                          "loss": 0.05 * (1 + level) + a * a + 2 * b * b, "accuracy": 0.9}
                         for level in levels for a in values for b in values])


def _no_temp_left(directory):
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_the_trajectory_figure_is_written_with_one_panel_per_network(tmp_path):
    frames = []
    for i, title in enumerate(("IMP, level 3", "one-shot, level 3")):
        result = trajectory.pca_directions(_walk(seed=20 + i))
        alpha, beta = trajectory.plane(result["coords"], 9)
        rows = pd.DataFrame([{"alpha": a, "beta": b, "loss": 0.02 * (1 + i) + a * a + b * b}
                             for a in alpha for b in beta])
        frames.append((title, rows, result["coords"], tuple(result["explained"])))
    trajectory.plot(frames, tmp_path / "trajectory.png")
    raw = (tmp_path / "trajectory.png").read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 20_000
    assert _no_temp_left(tmp_path)


def test_the_landscape_surfaces_are_written_with_one_panel_per_network(tmp_path):
    landscape.plot_surface(_surface([0, 3]), tmp_path / "surface.png")
    raw = (tmp_path / "surface.png").read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 20_000
    assert _no_temp_left(tmp_path)
