"""Ticket classes (Ma et al., NeurIPS 2021) on hand-made tables: two lrs (0.1, 0.01), the
dense network at level 0 and one pruned level at 20 % weights remaining (sparsity 0.8)."""
import pandas as pd
import pytest

from lth.report.classes import CONDITIONS, DEFAULTS, classify, plot


def run(variant, level, lr, test, val=None, pct=None, es=50, final=100, group="g"):
    return {"group": group, "lr": lr, "variant": variant, "level": level,
            "weights_remaining_pct": pct if pct is not None else (100.0 if level == 0 else 20.0),
            "final_test_accuracy": test, "final_val_accuracy": test if val is None else val,
            "early_stop_iteration": es, "final_iteration": final}


def lottery(ticket, reinit, small, dense=((0.90, 0.90), (0.88, 0.88)), pct=20.0, group="g", extra=()):
    """ticket/reinit/small: test accuracy at lr (0.1, 0.01); dense: (test, val) at those lrs."""
    rows = [run("ticket", 0, lr, t, v, group=group) for lr, (t, v) in zip((0.1, 0.01), dense)]
    for variant, accs in (("ticket", ticket), ("random_reinit", reinit), ("small_dense", small)):
        rows += [run(variant, 1, lr, a, pct=pct, group=group) for lr, a in zip((0.1, 0.01), accs)]
    return pd.DataFrame(rows + list(extra))


def only(frame, **settings):
    result = classify(frame, settings or None)
    assert len(result) == 1
    return result.iloc[0]


def conditions(row):
    return [bool(row[c]) for c in CONDITIONS]


def test_jackpot():
    # ticket best .91 @0.1; reinit best .89 (+.02); small dense best .86 (+.05);
    # dense .90 @0.1 (val .90 chooses it): .91 >= .90 at the same lr and at the best dense lr
    row = only(lottery(ticket=(0.91, 0.87), reinit=(0.89, 0.85), small=(0.86, 0.85)))
    assert conditions(row) == [True] * 5 and row.prize == "jackpot"
    assert row.sparsity == pytest.approx(0.8) and row.weights_remaining_pct == pytest.approx(20.0)
    assert (row.ticket_best_accuracy, row.ticket_best_lr) == (0.91, 0.1)
    assert (row.reinit_best_accuracy, row.small_dense_best_accuracy) == (0.89, 0.86)
    assert (row.dense_best_lr, row.dense_best_accuracy) == (0.1, 0.90)


def test_secondary_prize():
    # c4 only at lr 0.01: .885 >= dense .88; best ticket .89 < best dense .90 -> c5 false
    row = only(lottery(ticket=(0.89, 0.885), reinit=(0.87, 0.86), small=(0.86, 0.85)))
    assert conditions(row) == [True, True, True, True, False] and row.prize == "secondary prize"


def test_neither():
    # reinit best .888: .89 - .888 = .002 <= .005 -> c3 false; .89 < .90 and .87 < .88 -> c4, c5 false
    row = only(lottery(ticket=(0.89, 0.87), reinit=(0.888, 0.85), small=(0.86, 0.85)))
    assert conditions(row) == [True, True, False, False, False] and row.prize == "neither"


def test_c5_alone_is_not_a_prize():
    # dense val picks lr 0.01 (test .88); ticket .89 @0.1 beats that but not dense .90 @0.1
    # and .85 < .88 @0.01: c5 without c4 is still "neither"
    row = only(lottery(ticket=(0.89, 0.85), reinit=(0.87, 0.84), small=(0.86, 0.84),
                       dense=((0.90, 0.85), (0.88, 0.89))))
    assert conditions(row) == [True, True, True, False, True] and row.prize == "neither"


def test_reinit_must_be_beaten_at_its_best_lr():
    # at the same lr 0.1 the ticket wins by .02 (.91 vs .89), but the reinit at lr 0.01 reaches
    # .908: the ticket's best beats the reinit's best by only .002 -> c3 false
    frame = lottery(ticket=(0.91, 0.86), reinit=(0.89, 0.908), small=(0.86, 0.85))
    row = only(frame)
    assert not row.c3_beats_reinit and row.reinit_best_accuracy == 0.908
    assert row.prize == "neither"
    assert only(frame, margin=0.001).c3_beats_reinit  # the margin is what it fails by


def test_best_dense_lr_is_chosen_by_validation_not_test():
    # dense: lr 0.1 test .90 val .85, lr 0.01 test .88 val .89 -> lr* = 0.01 (by val), .88.
    # Chosen by test it would be .90 and the ticket's .89 would fail c5.
    row = only(lottery(ticket=(0.89, 0.885), reinit=(0.87, 0.86), small=(0.86, 0.85),
                       dense=((0.90, 0.85), (0.88, 0.89))))
    assert (row.dense_best_lr, row.dense_best_accuracy) == (0.01, 0.88)
    assert row.c5_matches_best_dense and row.prize == "jackpot"


def test_replicates_are_averaged():
    # reinit @0.1 has two seeds, .89 and .93: mean .91, so the ticket's .92 beats it by .01.
    # Taking the better seed (.93) would fail c3.
    frame = lottery(ticket=(0.92, 0.87), reinit=(0.89, 0.85), small=(0.86, 0.85),
                    extra=[run("random_reinit", 1, 0.1, 0.93)])
    row = only(frame)
    assert row.reinit_best_accuracy == pytest.approx(0.91) and row.c3_beats_reinit
    # a second ticket seed at 0.1 of .88 drags the ticket's mean to .90 -> c3 fails again
    row = only(pd.concat([frame, pd.DataFrame([run("ticket", 1, 0.1, 0.88)])], ignore_index=True))
    assert row.ticket_best_accuracy == pytest.approx(0.90) and not row.c3_beats_reinit


def test_insufficient_training_fails_c1():
    # one dense seed at lr 0.1 still had its minimum validation loss at the last iteration
    stalled = run("ticket", 0, 0.1, 0.90, es=100, final=100)
    row = only(lottery(ticket=(0.91, 0.87), reinit=(0.89, 0.85), small=(0.86, 0.85), extra=[stalled]))
    assert conditions(row) == [False, True, True, True, True] and row.prize == "neither"


def test_too_little_sparsity_fails_c1():
    frame = lottery(ticket=(0.91, 0.87), reinit=(0.89, 0.85), small=(0.86, 0.85), pct=60.0)
    row = only(frame)
    assert row.sparsity == pytest.approx(0.4) and not row.c1_sparsity_and_training
    assert row.prize == "neither"
    assert only(frame, min_sparsity=0.4).prize == "jackpot"


def test_missing_control_raises():
    frame = lottery(ticket=(0.91, 0.87), reinit=(0.89, 0.85), small=(0.86, 0.85), group="mnist-lenet")
    frame = frame[frame.variant != "small_dense"]
    with pytest.raises(ValueError, match=r"'mnist-lenet' level 1 has no small_dense runs.*"
                                         r"`controls.random_reinit: true` and `controls.small_dense: true`"):
        classify(frame)


def test_unknown_setting_raises():
    with pytest.raises(ValueError, match="margn"):
        classify(lottery(ticket=(0.91, 0.87), reinit=(0.89, 0.85), small=(0.86, 0.85)), {"margn": 0.01})
    assert DEFAULTS == {"min_sparsity": 0.5, "margin": 0.005, "tolerance": 0.0}


def two_groups():
    """Group a: level 1 jackpot, level 2 (4 %) secondary prize; group b: level 1 neither."""
    a = lottery(ticket=(0.91, 0.87), reinit=(0.89, 0.85), small=(0.86, 0.85), group="a")
    b = lottery(ticket=(0.89, 0.87), reinit=(0.888, 0.85), small=(0.86, 0.85), group="b")
    level2 = [run(v, 2, lr, acc, pct=4.0, group="a")
              for v, accs in (("ticket", (0.89, 0.885)), ("random_reinit", (0.87, 0.86)),
                              ("small_dense", (0.86, 0.85)))
              for lr, acc in zip((0.1, 0.01), accs)]
    return classify(pd.concat([a, b, pd.DataFrame(level2)], ignore_index=True))


def test_groups_and_levels_are_separate():
    result = two_groups()
    assert list(zip(result.group, result.level, result.prize)) == [
        ("a", 1, "jackpot"), ("a", 2, "secondary prize"), ("b", 1, "neither")]


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "classes" / "classes.png"
    plot(two_groups(), path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    assert [p.name for p in path.parent.iterdir()] == ["classes.png"]  # no temporary left behind


def test_prefer_small_lr_compares_the_smallest_and_largest_rate():
    # ticket (.91 @0.1, .87 @0.01): small minus large = -.04 -> "no"; reversed -> "yes";
    # within the margin -> "at boundary"
    assert only(lottery(ticket=(0.91, 0.87), reinit=(0.8, 0.8), small=(0.8, 0.8))).prefer_small_lr == "no"
    assert only(lottery(ticket=(0.87, 0.91), reinit=(0.8, 0.8), small=(0.8, 0.8))).prefer_small_lr == "yes"
    assert only(lottery(ticket=(0.90, 0.903), reinit=(0.8, 0.8), small=(0.8, 0.8))).prefer_small_lr == "at boundary"
    one_lr = lottery(ticket=(0.91, 0.87), reinit=(0.8, 0.8), small=(0.8, 0.8))
    assert only(one_lr[one_lr.lr == 0.1]).prefer_small_lr == "n/a"


def test_prefer_imp_pairs_groups_that_differ_only_in_schedule():
    def group(name, family, schedule, ticket):
        frame = lottery(ticket=ticket, reinit=(0.8, 0.8), small=(0.8, 0.8), group=name)
        return frame.assign(family=family, schedule=schedule)
    frame = pd.concat([group("imp a", "a", "iterative", (0.91, 0.85)), group("omp a", "a", "oneshot", (0.89, 0.88)),
                       group("imp b", "b", "iterative", (0.88, 0.88)), group("omp b", "b", "oneshot", (0.90, 0.86)),
                       group("imp c", "c", "iterative", (0.88, 0.88))])
    result = classify(frame).set_index("group").prefer_imp
    # best .91 vs .89: +.02 -> yes, on both rows; .88 vs .90 -> no; c has no one-shot partner
    assert result.to_dict() == {"imp a": "yes", "omp a": "yes", "imp b": "no", "omp b": "no", "imp c": "n/a"}
    assert (classify(frame.drop(columns=["family", "schedule"])).prefer_imp == "n/a").all()
