import math

import numpy as np
import pytest

from lth.report.anatomy import (COLUMNS, MAGNITUDE_COLUMNS, connectivity, magnitudes, plot_connectivity,
                                plot_distance, plot_init_histograms, plot_magnitude, table)


def values(frame, level, layer):
    rows = frame[(frame.level == level) & (frame.layer == layer)]
    return dict(zip(rows.quantity, rows.value))


def test_connectivity_of_a_linear_mask_by_hand():
    keep = np.array([[1, 1, 0, 0],
                     [0, 0, 0, 0],
                     [1, 0, 1, 0]], dtype=bool)
    # rows (outputs) 2, 0, 2; columns (inputs) 2, 1, 1, 0
    assert connectivity(keep) == pytest.approx({"incoming_mean": 4 / 3, "outgoing_mean": 1.0,
                                                "units_without_incoming_pct": 100 / 3,
                                                "units_without_outgoing_pct": 25.0})


def test_connectivity_of_a_conv_mask_by_hand():
    keep = np.zeros((2, 3, 2, 2), dtype=bool)  # [out, in, kh, kw]
    keep[0, 0] = True  # filter 0: all 4 taps of input channel 0 ...
    keep[0, 1, 1, 0] = True  # ... and one of channel 1; filter 1 empty; channel 2 unused
    # filters 5, 0; input channels 4, 1, 0
    assert connectivity(keep) == pytest.approx({"incoming_mean": 2.5, "outgoing_mean": 5 / 3,
                                                "units_without_incoming_pct": 50.0,
                                                "units_without_outgoing_pct": 100 / 3})


def hand_levels():
    f = np.float32
    level1 = {"level": 1, "weights_remaining_pct": 80.0,
              "start": {"w": np.array([[1.0, -2.0, 0.5, 3.0]], f), "v": np.array([[0.1, 0.2]], f)},
              "trained": {"w": np.array([[1.5, -2.0, 0.0, 5.0]], f), "v": np.array([[0.4, 0.2]], f)},
              "mask": {"w": np.array([[True, True, True, False]]), "v": np.array([[True, True]])},
              "next_mask": {"w": np.array([[True, False, False, False]]), "v": np.array([[True, True]])}}
    level0 = {**level1, "level": 0, "weights_remaining_pct": 100.0, "mask": None}
    level2 = {**level1, "level": 2, "weights_remaining_pct": 40.0, "mask": level1["next_mask"], "next_mask": None}
    return [level0, level1, level2]


def test_distance_kept_and_pruned_by_hand():
    frame = table(hand_levels(), ["w", "v"])
    assert list(frame.columns) == COLUMNS
    # w: survivors 0, 1, 2 (position 3, already pruned, moved 2 and must not count);
    # the next mask keeps 0 (moved 0.5, |start| 1) and prunes 1, 2 (moved 0, 0.5; |start| 2, 0.5)
    w = values(frame, 1, "w")
    assert w["distance_kept"] == pytest.approx(0.5) and w["distance_pruned"] == pytest.approx(0.25)
    assert w["start_magnitude_kept"] == pytest.approx(1.0) and w["start_magnitude_pruned"] == pytest.approx(1.25)
    # v keeps both (moved 0.3, 0): no pruned weights -> NaN
    v = values(frame, 1, "v")
    assert v["distance_kept"] == pytest.approx(0.15) and math.isnan(v["distance_pruned"])
    # "all" pools the weights: kept moved 0.5, 0.3, 0; pruned 0, 0.5
    pooled = values(frame, 1, "all")
    assert pooled["distance_kept"] == pytest.approx(0.8 / 3) and pooled["distance_pruned"] == pytest.approx(0.25)
    assert pooled["start_magnitude_kept"] == pytest.approx(1.3 / 3)
    # level 0 (mask None) counts position 3 of w as surviving and pruned next
    assert values(frame, 0, "w")["distance_pruned"] == pytest.approx((0 + 0.5 + 2) / 3)


def test_table_connectivity_rows_and_no_distance_at_the_last_level():
    frame = table(hand_levels(), ["w", "v"])
    assert values(frame, 0, "w")["incoming_mean"] == 4.0  # mask None: dense
    assert values(frame, 1, "w")["incoming_mean"] == 3.0
    assert values(frame, 2, "w")["units_without_outgoing_pct"] == 75.0
    last = frame[frame.level == 2]
    assert not last.quantity.str.startswith(("distance", "start_magnitude")).any()
    assert set(last.layer) == {"w", "v"} and "all" in set(frame[frame.level == 1].layer)
    assert set(frame[frame.layer == "all"].quantity) == {"distance_kept", "distance_pruned",
                                                         "start_magnitude_kept", "start_magnitude_pruned"}


def random_levels(count: int = 3):
    """A small IMP run: train = start + noise, prune 50 % of each layer's survivors by
    trained magnitude, restart from theta_0 ⊙ m."""
    rng = np.random.default_rng(0)
    shapes = {"conv1.weight": (4, 3, 3, 3), "conv1.bias": (4,), "fc1.weight": (20, 36), "fc2.weight": (10, 20)}
    prunable = ["conv1.weight", "fc1.weight", "fc2.weight"]
    init = {n: (0.1 * rng.standard_normal(s)).astype(np.float32) for n, s in shapes.items()}
    levels, mask = [], None
    for level in range(count):
        keep = {n: np.ones(shapes[n], bool) if mask is None else mask[n] for n in prunable}
        start = {n: np.where(keep[n], w, 0).astype(np.float32) if n in keep else w for n, w in init.items()}
        trained = {n: (w + 0.05 * rng.standard_normal(w.shape)).astype(np.float32) for n, w in start.items()}
        next_mask = None
        if level < count - 1:
            next_mask = {}
            for n in prunable:
                cut = np.quantile(np.abs(trained[n][keep[n]]), 0.5)
                next_mask[n] = keep[n] & (np.abs(trained[n]) > cut)
        levels.append({"level": level, "weights_remaining_pct": 100.0 * 0.5 ** level, "start": start,
                       "trained": trained, "mask": mask, "next_mask": next_mask})
        mask = next_mask
    return levels, prunable


def test_plots_write_png_files(tmp_path):
    levels, prunable = random_levels()
    frame = table(levels, prunable)
    # larger trained weights are the ones kept: the appendix's "kept weights moved farther"
    assert values(frame, 0, "all")["distance_kept"] > values(frame, 0, "all")["distance_pruned"]
    paths = [tmp_path / "hist.png", tmp_path / "sub" / "distance.png", tmp_path / "connectivity.png"]
    plot_init_histograms(levels, prunable, paths[0])
    plot_distance(frame, paths[1])
    plot_connectivity(frame, paths[2])
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["connectivity.png", "distance.png",
                                                                          "hist.png"]


# ---- start vs final magnitude of the survivors (LTH'19 appendix F.5) ----

def _groups(entry, names):
    """(start, final) survivors and next-kept / next-pruned values, by plain numpy indexing."""
    out = {"": ([], []), "kept_next_": ([], []), "pruned_next_": ([], [])}
    for n in names:
        start, final = np.asarray(entry["start"][n], float), np.asarray(entry["trained"][n], float)
        current = np.ones(start.shape, bool) if entry["mask"] is None else entry["mask"][n]
        where = {"": current}
        if entry["next_mask"] is not None:
            where.update({"kept_next_": current & entry["next_mask"][n], "pruned_next_": current & ~entry["next_mask"][n]})
        for prefix, w in where.items():
            out[prefix][0].extend(start[w].tolist())
            out[prefix][1].extend(final[w].tolist())
    return out


def test_magnitude_table_by_hand_on_two_levels():
    levels = hand_levels()[1:]  # level 1 (with a next mask) and level 2 (the last)
    frame = magnitudes(levels, ["w", "v"])
    assert list(frame.columns) == MAGNITUDE_COLUMNS
    assert [(r.level, r.layer) for r in frame.itertuples()] == [(1, "all"), (1, "w"), (1, "v"),
                                                               (2, "all"), (2, "w"), (2, "v")]
    row = frame[(frame.level == 1) & (frame.layer == "all")].iloc[0]
    # by hand: level 1 survivors w[0..2] (start 1, -2, 0.5; end 1.5, -2, 0) and v (0.1, 0.2; 0.4, 0.2)
    assert row.survivors == 5 and row.weights_remaining_pct == 80.0
    assert row.start_magnitude == pytest.approx((1 + 2 + 0.5 + 0.1 + 0.2) / 5)
    assert row.final_magnitude == pytest.approx((1.5 + 2 + 0 + 0.4 + 0.2) / 5)
    assert row.grew_pct == pytest.approx(100 * 2 / 5)  # w[0] 1 -> 1.5 and v[0] 0.1 -> 0.4; ties do not grow
    # the next mask keeps w[0], v[0], v[1] and removes w[1], w[2]
    assert row.kept_next_start_magnitude == pytest.approx(1.3 / 3) and row.kept_next_final_magnitude == pytest.approx(2.1 / 3)
    assert row.pruned_next_start_magnitude == pytest.approx(1.25) and row.pruned_next_final_magnitude == pytest.approx(1.0)
    assert row.kept_next_grew_pct == pytest.approx(200 / 3) and row.pruned_next_grew_pct == 0.0
    # against numpy, every level and layer
    for entry in levels:
        for layer, names in (("all", ["w", "v"]), ("w", ["w"]), ("v", ["v"])):
            got = frame[(frame.level == entry["level"]) & (frame.layer == layer)].iloc[0]
            for prefix, (start, final) in _groups(entry, names).items():
                a, b = np.abs(np.array(start)), np.abs(np.array(final))
                if not a.size:
                    assert math.isnan(got[f"{prefix}start_magnitude"]) and math.isnan(got[f"{prefix}grew_pct"])
                    continue
                assert got[f"{prefix}start_magnitude"] == pytest.approx(a.mean())
                assert got[f"{prefix}final_magnitude"] == pytest.approx(b.mean())
                assert got[f"{prefix}grew_pct"] == pytest.approx(100 * np.mean(b > a))
    last = frame[frame.level == 2]
    assert last.kept_next_start_magnitude.isna().all() and last.pruned_next_grew_pct.isna().all()
    assert last[last.layer == "all"].survivors.item() == 3  # w[0], v[0], v[1]


def test_magnitude_plot_writes_a_png(tmp_path):
    levels, prunable = random_levels()
    frame = magnitudes(levels, prunable)
    assert (frame[frame.layer == "all"].survivors.tolist()
            == [sum(int(np.ones_like(levels[0]["start"][n], bool).sum()) for n in prunable),
                *[sum(int(levels[i]["mask"][n].sum()) for n in prunable) for i in (1, 2)]])
    plot_magnitude(levels, frame, prunable, tmp_path / "magnitude.png")
    assert (tmp_path / "magnitude.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
