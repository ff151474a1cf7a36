import numpy as np
import pytest

from lth.report.correlation import r_p, table, top_p


def test_identical_weights_give_one():
    rng = np.random.default_rng(0)
    w = {"a": rng.standard_normal((30, 7)), "b": rng.standard_normal((5, 5))}
    for p in (0.1, 0.2, 0.33, 0.5, 1.0):
        total, per_layer = r_p(w, w, p)
        assert total == 1.0 and set(per_layer.values()) == {1.0}


def test_independent_random_weights_give_about_p():
    """Two independent draws: |T ∩ T'| is hypergeometric with mean p*k, so R_p ≈ p; with
    N = 266,200 weights its standard deviation is below 0.003 (tolerance: 0.01)."""
    rng = np.random.default_rng(1)
    shapes = {"fc1": (300, 784), "fc2": (100, 300), "fc3": (10, 100)}
    a = {n: rng.standard_normal(s) for n, s in shapes.items()}
    b = {n: rng.standard_normal(s) for n, s in shapes.items()}
    for p in (0.1, 0.2, 0.3, 0.4, 0.5):
        assert abs(r_p(a, b, p)[0] - p) < 0.01


def test_hand_computed_case():
    # layer x: |.| = 4 3 2 1 -> top-50% {0, 1}; y: |.| = 1 4 3 2 -> top-50% {1, 2}; overlap 1 of 2
    # layer z (2 weights): top-50% is the larger: index 1 in both -> overlap 1 of 1
    a = {"x": np.array([[4.0, -3.0], [2.0, 1.0]]), "z": np.array([[0.5, -0.9]])}
    b = {"x": np.array([[1.0, 4.0], [-3.0, 2.0]]), "z": np.array([[0.1, 0.2]])}
    total, per_layer = r_p(a, b, 0.5)
    assert per_layer == {"x": 0.5, "z": 1.0}
    assert total == pytest.approx(2 / 3)  # (1 + 1) / (0.5 * (4 + 2))


def test_ties_are_broken_by_position():
    assert top_p(np.array([1.0, 2.0, 2.0, 2.0]), 0.5).tolist() == [1, 2]
    assert top_p(np.array([[-3.0, 3.0], [3.0, 0.0]]), 0.5).tolist() == [0, 1]


def test_table_has_an_all_row_per_p_and_rejects_bad_p():
    w = {"x": np.arange(10.0).reshape(2, 5)}
    rows = table(w, w, [0.1, 0.5])
    assert [(r["p"], r["layer"]) for r in rows] == [(0.1, "all"), (0.1, "x"), (0.5, "all"), (0.5, "x")]
    with pytest.raises(ValueError, match="p must be"):
        r_p(w, w, 0)


def test_a_mask_restricts_the_ranking_to_survivors():
    rng = np.random.default_rng(2)
    keep = {"x": rng.random((200, 50)) < 0.1}
    a = {"x": np.where(keep["x"], rng.standard_normal((200, 50)), 0.0)}
    b = {"x": np.where(keep["x"], rng.standard_normal((200, 50)), 0.0)}
    # over whole layers the shared zeros fake a correlation once p exceeds the density ...
    assert r_p(a, b, 0.3)[0] > 0.9
    # ... over the survivors, independent weights give about p
    assert abs(r_p(a, b, 0.3, mask=keep)[0] - 0.3) < 0.06
