"""The onset of stability and matching along the rewinding sweep (LMC Fig. 9) on hand-made
path tables, and its two figures (LMC Figs. 7 and 9) on hand-made tables."""
import math
import struct

import numpy as np
import pandas as pd
import pytest

from lth.report import instability, plots

DENSE = 0.90  # the dense network's test accuracy in every table below


def paths(networks, dense=DENSE):
    """Path rows (3 alphas, test and train) of networks given as
    {(run, lottery, level, variant, k, pair): (instability, endpoint accuracy)}: endpoint
    errors both 1 - accuracy and the middle one higher by the instability."""
    rows = []
    for (run, lottery, level, variant, k, pair), (barrier, accuracy) in networks.items():
        error = 1 - accuracy
        for split in ("test", "train"):
            for alpha, e in zip((0.0, 0.5, 1.0), (error, error + barrier, error)):
                rows.append({"run": run, "lottery": lottery, "level": level, "variant": variant, "k": k,
                             "pair": pair, "alpha": alpha, "split": split, "loss": 0.0, "error": e,
                             "weights_remaining_pct": 100.0 * 0.8 ** level, "dense_test_accuracy": dense})
    return pd.DataFrame(rows)


def sweep(pairs_by_k, level=3, variant="ticket", accuracy=DENSE):
    """One network's path rows: pairs_by_k is {k: [instability of pair 0, pair 1, ...]}."""
    return {("imp", "imp", level, variant, k, pair): (barrier, accuracy)
            for k, barriers in pairs_by_k.items() for pair, barrier in enumerate(barriers)}


def only_row(networks, steps_per_epoch=None, **options):
    table = instability.onset(paths(networks), options.get("threshold", 0.02), options.get("matching", 0.002),
                              steps_per_epoch)
    assert list(table.columns) == list(instability.ONSET_COLUMNS) and len(table) == 1
    return table.iloc[0]


STABLE, UNSTABLE = 0.01, 0.05


def test_stable_from_the_second_k_on():
    row = only_row(sweep({"0it": [UNSTABLE], "100it": [STABLE], "500it": [STABLE]}))
    assert row.median_k_stable == 100 and row.never_stable == 0
    assert row.points == 3 and row.sweep == "0it 100it 500it" and row.pairs == 1
    # accuracy equals the dense network's: matching at every k, so from the first
    assert row.median_k_matching == 0 and row.median_k_stable_matching == 100


def test_an_unstable_later_k_resets_the_onset():
    row = only_row(sweep({"0it": [STABLE], "100it": [UNSTABLE], "200it": [STABLE], "500it": [STABLE]}))
    assert row.median_k_stable == 200


def test_never_stable_within_the_sweep_is_nan_and_counted():
    row = only_row(sweep({"0it": [STABLE], "100it": [STABLE], "500it": [UNSTABLE]}))
    assert math.isnan(row.median_k_stable) and row.never_stable == 1
    assert math.isnan(row.median_k_stable_matching) and row.never_stable_matching == 1
    assert row.median_k_matching == 0 and row.never_matching == 0


def test_the_sweep_is_ordered_in_iterations_with_epochs_converted():
    # written order and string order differ from training order: 2ep = 200 iterations here
    networks = sweep({"500it": [STABLE], "2ep": [STABLE], "0it": [UNSTABLE], "100it": [UNSTABLE]})
    row = only_row(networks, steps_per_epoch=100)
    assert row.median_k_stable == 200 and row.sweep == "0it 100it 2ep 500it"
    assert only_row(networks, steps_per_epoch={"imp": 300}).median_k_stable == 500  # 2ep = 600 iterations
    with pytest.raises(ValueError, match="steps per epoch"):
        only_row(networks)


def test_median_over_an_odd_count_of_pairs():
    # pair onsets: 0, 100, 500
    row = only_row(sweep({"0it": [STABLE, UNSTABLE, UNSTABLE], "100it": [STABLE, STABLE, UNSTABLE],
                          "500it": [STABLE, STABLE, STABLE]}))
    assert row.pairs == 3 and row.median_k_stable == 100 and row.never_stable == 0
    # one pair never: onsets 0, 100, never -> still the middle one, 100
    row = only_row(sweep({"0it": [STABLE, UNSTABLE, STABLE], "100it": [STABLE, STABLE, STABLE],
                          "500it": [STABLE, STABLE, UNSTABLE]}))
    assert row.median_k_stable == 100 and row.never_stable == 1
    # two of three never: the median pair never gets there (no strict majority)
    row = only_row(sweep({"0it": [STABLE, STABLE, STABLE], "500it": [STABLE, UNSTABLE, UNSTABLE]}))
    assert math.isnan(row.median_k_stable) and row.never_stable == 2


def test_median_over_an_even_count_of_pairs_is_the_mean_of_the_middle_two():
    # onsets 0, 100, 100, 500 -> 100; 0, 0, 100, 500 -> 50
    row = only_row(sweep({"0it": [STABLE, UNSTABLE, UNSTABLE, UNSTABLE], "100it": [STABLE, STABLE, STABLE, UNSTABLE],
                          "500it": [STABLE] * 4}))
    assert row.pairs == 4 and row.median_k_stable == 100
    row = only_row(sweep({"0it": [STABLE, STABLE, UNSTABLE, UNSTABLE], "100it": [STABLE, STABLE, STABLE, UNSTABLE],
                          "500it": [STABLE] * 4}))
    assert row.median_k_stable == 50
    # half the pairs never: no median
    row = only_row(sweep({"0it": [STABLE, STABLE, UNSTABLE, UNSTABLE], "500it": [STABLE, STABLE, UNSTABLE, UNSTABLE]}))
    assert math.isnan(row.median_k_stable) and row.never_stable == 2


def test_matching_is_against_the_dense_accuracy():
    # drop 0.3 % (not matching) at 0it, 0.1 % (matching) from 100it; stable throughout
    networks = {**sweep({"0it": [STABLE]}, accuracy=DENSE - 0.003),
                **sweep({"100it": [STABLE], "500it": [STABLE]}, accuracy=DENSE - 0.001)}
    row = only_row(networks)
    assert row.median_k_stable == 0 and row.median_k_matching == 100 and row.median_k_stable_matching == 100
    # a looser matching rule (drop below 0.5 %) makes it matching from 0it; a dense network
    # 1 point better makes it match nowhere
    assert only_row(networks, matching=0.005).median_k_matching == 0
    table = instability.onset(paths(networks, dense=DENSE + 0.01), 0.02, 0.002)
    assert math.isnan(table.median_k_matching.item()) and table.never_matching.item() == 1
    # stable and matching needs both at the same k: stable from 500it, matching from 100it
    both = {**networks, ("imp", "imp", 3, "ticket", "100it", 0): (UNSTABLE, DENSE - 0.001)}
    row = only_row(both)
    assert row.median_k_stable == 500 and row.median_k_matching == 100 and row.median_k_stable_matching == 500


def rewinding_sweep():
    """Three lotteries that differ only in rewind.to (reset, 500it, continue)."""
    networks = {}
    for k, barrier in (("0it", UNSTABLE), ("500it", STABLE), ("continue", UNSTABLE)):
        label = f"rewind.to={k if k != '0it' else 'reset'} prune.rate=0.3"
        networks[(label, label, 2, "ticket", k, 0)] = (barrier, DENSE)
        networks[(label, label, 0, "ticket", "0it", 0)] = (UNSTABLE, DENSE)  # the dense network, shared
        networks[(label, label, 0, "ticket", "1000it", 0)] = (STABLE, DENSE)
        networks[(label, label, 2, "random_reinit", "0it", 0)] = (STABLE if k == "500it" else UNSTABLE, DENSE)
    return instability.onset(paths(networks), 0.02, 0.002)


def test_lotteries_differing_only_in_rewind_point_are_one_sweep():
    """Pruned levels take each lottery's rewind.to; the dense network's points are shared by
    every lottery and count once; a random reinit (0it in each lottery, on its own mask) is
    no sweep and keeps its lottery; continue is no point in training time."""
    table = rewinding_sweep()
    ticket = table[table.variant == "ticket"].set_index("level")
    assert set(ticket.lottery) == {"prune.rate=0.3"} and set(ticket.run) == {"prune.rate=0.3"}
    assert ticket.loc[2, "sweep"] == "0it 500it" and ticket.loc[2, "median_k_stable"] == 500
    assert ticket.loc[0, "sweep"] == "0it 1000it" and ticket.loc[0, "pairs"] == 1
    assert ticket.loc[0, "median_k_stable"] == 1000
    reinit = table[table.variant == "random_reinit"].set_index("lottery")
    assert len(reinit) == 3 and set(reinit.points) == {1}
    assert reinit.loc["rewind.to=500it prune.rate=0.3", "median_k_stable"] == 0
    assert reinit.never_stable.sum() == 2


def test_networks_that_are_no_sweep_join_their_sweeps_panel(tmp_path):
    table = rewinding_sweep()
    assert table.lottery.nunique() == 4
    plots.onset_vs_remaining(table, tmp_path / "one_panel.png")
    plots.onset_vs_remaining(table[table.variant == "ticket"], tmp_path / "ticket.png")
    assert check_png(tmp_path / "one_panel.png") == check_png(tmp_path / "ticket.png")


def test_summarise_is_unchanged_by_the_shared_pair_table():
    networks = sweep({"0it": [UNSTABLE, STABLE], "100it": [STABLE, STABLE]})
    result = instability.summarise(paths(networks), 0.02, 0.002).set_index("k")
    assert result.loc["0it", "instability_test"] == pytest.approx(0.03) and not result.loc["0it", "stable"]
    assert result.loc["100it", "instability_test"] == pytest.approx(0.01) and result.loc["100it", "stable"]
    assert result.loc["0it", "pairs"] == 2 and result.loc["0it", "test_accuracy"] == pytest.approx(DENSE)


def check_png(path):
    raw = path.read_bytes()
    assert len(raw) > 0 and raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    width, height = struct.unpack(">II", raw[16:24])
    assert width > 100 and height > 100
    return width, height


def summary_and_onset(lotteries, ks=("0it", "100it", "2ep"), levels=(0, 3), variants=("ticket", "random_prune")):
    networks = {}
    for lottery in lotteries:
        for level in levels:
            for variant in variants if level else ("ticket",):
                for i, k in enumerate(ks):
                    for pair in range(3):
                        # the random pruning is never stable: NaN onsets
                        barrier = UNSTABLE if variant == "random_prune" or i < pair % len(ks) else STABLE
                        networks[(lottery, lottery, level, variant, k, pair)] = (barrier, DENSE - 0.001 * level)
    frame = paths(networks)
    result = instability.summarise(frame, 0.02, 0.002)
    result["k_iterations"] = [instability.k_iterations(k, 100) for k in result.k]
    return result, instability.onset(frame, 0.02, 0.002, 100)


@pytest.mark.parametrize("lotteries, ks, levels", [
    (["imp"], ("0it", "100it", "2ep"), (0, 3)),
    (["imp"], ("500it",), (0, 3)),                       # one k only
    (["imp"], ("0it", "100it"), (3,)),                   # one level only
    (["train.lr=0.001", "train.lr=0.01"], ("0it", "1ep"), (0, 2, 5)),  # several lotteries: a panel each
])
def test_the_figures_are_written_with_nan_onsets(tmp_path, lotteries, ks, levels):
    result, onsets = summary_and_onset(lotteries, ks, levels)
    assert onsets.median_k_stable.isna().any()  # the random pruning never becomes stable
    plots.error_vs_k(result, tmp_path / "error_vs_k.png")
    plots.onset_vs_remaining(onsets, tmp_path / "onset_vs_remaining.png")
    (w7, _), (w9, _) = check_png(tmp_path / "error_vs_k.png"), check_png(tmp_path / "onset_vs_remaining.png")
    one = tmp_path / "one"
    one.mkdir()
    single, single_onsets = summary_and_onset(lotteries[:1], ks, levels)
    plots.error_vs_k(single, one / "a.png")
    plots.onset_vs_remaining(single_onsets, one / "b.png")
    assert w7 == len(lotteries) * check_png(one / "a.png")[0]
    assert w9 == len(lotteries) * check_png(one / "b.png")[0]


def test_the_figures_take_a_table_of_onsets_that_are_all_nan(tmp_path):
    onsets = pd.DataFrame([{"run": "imp", "lottery": "imp", "level": level, "variant": "ticket",
                            "weights_remaining_pct": remaining, "pairs": 1, "points": 1, "sweep": "0it",
                            **{f"median_k_{c}": np.nan for c in instability.CRITERIA},
                            **{f"never_{c}": 1 for c in instability.CRITERIA}}
                           for level, remaining in ((0, 100.0), (3, 51.2))])
    plots.onset_vs_remaining(onsets, tmp_path / "nan.png")
    check_png(tmp_path / "nan.png")
    # error vs k without the iterations column (k ordered as written: iterations, then epochs)
    result = pd.DataFrame([{"run": "imp", "lottery": "imp", "level": 3, "variant": "ticket", "k": k,
                            "weights_remaining_pct": 51.2, "test_accuracy": 0.88, "dense_test_accuracy": 0.9}
                           for k in ("1ep", "500it", "continue")])
    plots.error_vs_k(result, tmp_path / "k.png")
    check_png(tmp_path / "k.png")
