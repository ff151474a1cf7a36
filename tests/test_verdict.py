"""The verdict (lth.report.verdict) on hand-made summary tables: the ticket against a control at
some levels and not others, ties, one seed and three seeds (a gap within and beyond the
spread), the sparsest level matching the dense network, an instability table, no controls;
and finding the instability stage that belongs to a summary in a results folder."""
import pandas as pd

from lth.store import records
from lth.report import verdict
from lth.report.summary import COLUMNS

PCT = {0: 100.0, 1: 80.0, 2: 64.0, 3: 51.3, 4: 41.0}


def row(variant, level, accuracy, iteration, run="imp", lottery="imp"):
    """One summary row; `accuracy` in percent."""
    out = dict.fromkeys(COLUMNS)
    out.update(run=run, lottery=lottery, variant=variant, level=level, weights_remaining_pct=PCT[level],
               early_stop_iteration=iteration, early_stop_test_accuracy=accuracy / 100)
    return out


def frame(rows):
    return pd.DataFrame(rows, columns=COLUMNS)


def seeds(variant, level, accuracies, iterations):
    """One row per seed (runs s0, s1, ... of the lottery "imp")."""
    return [row(variant, level, a, i, run=f"s{n}") for n, (a, i) in enumerate(zip(accuracies, iterations))]


ONE_SEED = [row("ticket", 0, 88.0, 5000), row("ticket", 1, 88.5, 4000), row("ticket", 2, 88.1, 6000),
            row("ticket", 3, 87.0, 3000),
            row("random_reinit", 1, 88.5, 5000), row("random_reinit", 2, 87.0, 5000),
            row("random_reinit", 3, 87.5, 3000)]


def test_a_gap_within_the_spread_everywhere_is_said_so_not_as_an_empty_list():
    rows = (seeds("ticket", 0, [90, 91, 92], [3000] * 3) + seeds("ticket", 1, [89, 91, 93], [3000] * 3)
            + seeds("random_reinit", 1, [88, 90, 92], [3000] * 3))  # gap 1, spread 2 + 2
    said = verdict.lines(frame(rows))[0]
    assert said.endswith("the gap is within the spread over 3 seeds (ticket std + control std) at 1 (80.0 %)")
    assert "none" not in said


def test_one_seed_beats_at_some_levels_loses_at_others_and_ties_count_as_neither():
    said = verdict.lines(frame(ONE_SEED))
    assert said[0] == ("vs random_reinit, test accuracy at early stop: the ticket's mean is higher at 1 of 3 levels, "
                       "by 1.10 points: 2 (64.0 %) +1.10; lower at 3 (51.3 %) -0.50; tied at 1 (80.0 %); "
                       "one seed: no spread to compare")
    assert said[1] == ("vs random_reinit, early-stop iteration: the ticket's mean is earlier at 1 of 3 levels, "
                       "by 1000 iterations: 1 (80.0 %) 4000 vs 5000; later at 2 (64.0 %) 6000 vs 5000; "
                       "the same at 3 (51.3 %); one seed: no spread to compare")
    # level 2 matches (88.1 >= 88.0) but stops later than the dense network; level 1 (88.5 at 4000) does both
    assert said[2] == ("matching the dense network (88.00 % test accuracy at early stop; a level matches at "
                       ">= 88.00 %: the dense accuracy itself, one seed): sparsest matching level 2 (64.0 %) at "
                       "88.10 %, early stop at iteration 6000 vs the dense 5000 (later); the sparsest that also "
                       "stops no later (a winning ticket): 1 (80.0 %)")
    assert len(said) == 3


def test_three_seeds_gap_beyond_and_within_the_spread():
    rows = (seeds("ticket", 0, [90, 91, 92], [3000, 3000, 3000])
            + seeds("ticket", 1, [90, 91, 92], [1000, 2000, 3000])         # mean 91, std 1; 2000, std 1000
            + seeds("ticket", 2, [90, 91, 92], [2000, 2000, 2000])         # mean 91, std 1; 2000, std 0
            + seeds("random_reinit", 1, [88.5, 89, 89.5], [4000, 5000, 6000])  # 89, std 0.5; 5000, std 1000
            + seeds("random_reinit", 2, [89, 90, 91], [2000, 3000, 4000]))     # 90, std 1; 3000, std 1000
    said = verdict.lines(frame(rows))
    # accuracy: level 1 gap 2 > 1 + 0.5; level 2 gap 1 <= 1 + 1
    assert said[0] == ("vs random_reinit, test accuracy at early stop: the ticket's mean is higher at 2 of 2 levels, "
                       "by 1.00 to 2.00 points: 1 (80.0 %) +2.00; 2 (64.0 %) +1.00; the gap exceeds the spread over "
                       "3 seeds (ticket std + control std) at 1 (80.0 %), not at 2 (64.0 %)")
    # iterations: level 1 gap 3000 > 1000 + 1000; level 2 gap 1000 = 0 + 1000 is not beyond it
    assert said[1] == ("vs random_reinit, early-stop iteration: the ticket's mean is earlier at 2 of 2 levels, "
                       "by 1000 to 3000 iterations: 1 (80.0 %) 2000 vs 5000; 2 (64.0 %) 2000 vs 3000; the gap "
                       "exceeds the spread over 3 seeds (ticket std + control std) at 1 (80.0 %), not at 2 (64.0 %)")
    # the dense network's std over seeds (1 point) is the allowance
    assert said[2] == ("matching the dense network (91.00 % test accuracy at early stop; a level matches at "
                       ">= 90.00 %: dense minus its std over 3 seeds): sparsest matching level 2 (64.0 %) at 91.00 %, "
                       "early stop at iteration 2000 vs the dense 3000 (no later: a winning ticket)")


def test_several_seeds_where_the_ticket_never_wins_say_nothing_of_spread():
    rows = (seeds("ticket", 0, [90, 90], [1000, 1000]) + seeds("ticket", 1, [89, 90], [1000, 2000])
            + seeds("random_reinit", 1, [89, 90], [1000, 2000]))
    said = verdict.lines(frame(rows))
    assert said[0] == ("vs random_reinit, test accuracy at early stop: the ticket's mean is higher at 0 of 1 level; "
                       "tied at 1 (80.0 %)")
    assert said[1] == "vs random_reinit, early-stop iteration: the ticket's mean is earlier at 0 of 1 level; " \
                      "the same at 1 (80.0 %)"


def test_sparsest_matching_level_names_the_denser_levels_that_fall_short():
    rows = [row("ticket", 0, 88.0, 5000), row("ticket", 1, 88.0, 4000),  # a tie with the dense network matches
            row("ticket", 2, 87.5, 4000), row("ticket", 3, 88.2, 5000), row("ticket", 4, 86.0, 3000)]
    said = verdict.lines(frame(rows))
    assert said[0].startswith("no control ran: enable controls.random_reinit")
    assert said[1] == ("matching the dense network (88.00 % test accuracy at early stop; a level matches at "
                       ">= 88.00 %: the dense accuracy itself, one seed): sparsest matching level 3 (51.3 %) at "
                       "88.20 %, early stop at iteration 5000 vs the dense 5000 (no later: a winning ticket); "
                       "denser levels that do not match: 2 (64.0 %)")
    # a tolerance of 0.6 points lets level 2 match too
    assert verdict.lines(frame(rows), tolerance=0.6)[1] == (
        "matching the dense network (88.00 % test accuracy at early stop; a level matches at >= 87.40 %: dense "
        "minus 0.60 points tolerance): sparsest matching level 3 (51.3 %) at 88.20 %, early stop at iteration 5000 "
        "vs the dense 5000 (no later: a winning ticket)")


def test_no_pruned_level_matches():
    rows = [row("ticket", 0, 88.0, 5000), row("ticket", 1, 87.0, 4000), row("ticket", 2, 86.5, 4000)]
    assert verdict.lines(frame(rows))[1] == (
        "matching the dense network (88.00 % test accuracy at early stop; a level matches at >= 88.00 %: the dense "
        "accuracy itself, one seed): no pruned level matches; the closest, 1 (80.0 %), reaches 87.00 % "
        "(-1.00 points)")


def test_no_controls_is_one_line_and_perturbations_are_not_controls():
    rows = [row("ticket", 0, 88.0, 5000), row("ticket", 1, 88.0, 4000), row("noise_1", 1, 80.0, 9000)]
    said = verdict.lines(frame(rows))
    assert said[0] == ("no control ran: enable controls.random_reinit (or random_prune, small_dense) to see whether "
                       "the ticket's accuracy and speed beat its reinitialisation's")
    assert len(said) == 2 and said[1].startswith("matching the dense network")


def test_each_control_and_each_lottery_gets_its_lines():
    rows = [row(v, lvl, a, 1000, run=lot, lottery=lot) for lot in ("rate=0.2", "rate=0.3")
            for v, lvl, a in (("ticket", 0, 90), ("ticket", 1, 91), ("random_prune", 1, 85), ("small_dense", 1, 92))]
    said = verdict.lines(frame(rows))
    assert [line.split(",")[0] for line in said] == [
        f"{lottery}: {what}" for lottery in ("rate=0.2", "rate=0.3")
        for what in ("vs random_prune", "vs random_prune", "vs small_dense", "vs small_dense",
                     "matching the dense network (90.00 % test accuracy at early stop; a level matches at >= 90.00 %: "
                     "the dense accuracy itself")]
    assert said[0].endswith("higher at 1 of 1 level, by 6.00 points: 1 (80.0 %) +6.00; one seed: no spread to compare")
    assert said[2].endswith("higher at 0 of 1 level; lower at 1 (80.0 %) -1.00; one seed: no spread to compare")


def instability_row(run, level, variant, k, stable, matching):
    return {"run": run, "lottery": "imp", "level": level, "variant": variant, "k": k,
            "weights_remaining_pct": PCT[level], "pairs": 1, "instability_test": 0.0, "stable": stable,
            "matching": matching}


def test_instability_names_the_levels_stable_and_matching_in_every_run():
    analysed = pd.DataFrame([
        instability_row("s0", 3, "ticket", "0it", True, True), instability_row("s1", 3, "ticket", "0it", False, True),
        instability_row("s0", 0, "ticket", "0it", True, True), instability_row("s1", 0, "ticket", "0it", True, True),
        instability_row("s0", 0, "ticket", "500it", True, False),
        instability_row("s1", 0, "ticket", "500it", True, False),
        instability_row("s0", 3, "random_reinit", "0it", False, False),
        instability_row("s1", 3, "random_reinit", "0it", False, False),
        instability_row("s0", 4, "ticket", "0it", True, False), instability_row("s1", 4, "ticket", "0it", False, True),
    ])
    said = verdict.lines(frame(seeds("ticket", 0, [90, 90], [1, 1]) + seeds("ticket", 3, [90, 90], [1, 1])), analysed)
    assert said[-1] == ("instability: stable and matching at 0 (100.0 %); in some runs only: 3 (51.3 %) in 1 of 2 "
                        "runs; not at 0 (100.0 %) k=500it (not matching), 3 (51.3 %) random_reinit (unstable, not "
                        "matching), 4 (41.0 %) (never both in one run)")
    assert verdict.lines(frame(ONE_SEED), analysed.iloc[:2])[-1] == \
        "instability: stable and matching at no level; in some runs only: 3 (51.3 %) in 1 of 2 runs"


def test_instability_read_back_from_its_csv(tmp_path):
    """The flags as the instability stage writes them (summary.csv, float_format %.6g)."""
    analysed = pd.DataFrame([instability_row("imp", 0, "ticket", "0it", True, True),
                             instability_row("imp", 3, "ticket", "0it", True, False)])
    analysed.to_csv(tmp_path / "summary.csv", index=False, float_format="%.6g")
    said = verdict.lines(frame(ONE_SEED), verdict.read_instability(tmp_path / "summary.csv"))
    assert said[-1] == "instability: stable and matching at 0 (100.0 %); not at 3 (51.3 %) (not matching)"
    assert verdict.read_instability(tmp_path / "missing.csv") is None and verdict.read_instability(None) is None


def test_empty_table():
    assert verdict.lines(frame([])) == ["empty summary: nothing to judge"]


def test_write_and_read_back(tmp_path):
    said = verdict.lines(frame(ONE_SEED))
    verdict.write(tmp_path / verdict.FILE, said)
    assert (tmp_path / verdict.FILE).read_text().splitlines() == said


def _stage(root, kind, sid, spec, files=()):
    """A finished stage directory: spec.json, the given files (name -> text) and its record."""
    import json
    directory = root / kind / sid
    directory.mkdir(parents=True)
    spec = {"kind": kind, "id": sid, **spec}
    (directory / "spec.json").write_text(json.dumps(spec))
    for name, text in dict(files).items():
        (directory / name).write_text(text)
    records.write(directory, spec, {"spec": "spec.json", **{n: n for n in dict(files)}})
    return directory


def test_the_instability_stage_of_a_summary_is_the_one_planned_with_it(tmp_path):
    """The plan records which summary an instability stage belongs with (its spec's
    `related`, not hashed): the verdict reads that one spec per instability stage."""
    csv = "run,lottery,level,variant,k,weights_remaining_pct,stable,matching\nimp,imp,0,ticket,0it,100,True,True\n"
    summary_dir = _stage(tmp_path, "summary", "s" * 12, {"layout": {"runs": []}})
    assert verdict.instability_for(summary_dir) is None
    _stage(tmp_path, "instability", "i2" * 6, {"related": {"summary": "o" * 12}}, {"summary.csv": csv})  # another's
    _stage(tmp_path, "instability", "i3" * 6, {"upstream": {}}, {"summary.csv": csv})  # a spec from before `related`
    assert verdict.instability_for(summary_dir) is None
    ours = _stage(tmp_path, "instability", "i1" * 6, {"related": {"summary": "s" * 12}}, {"summary.csv": csv})
    assert verdict.instability_for(summary_dir) == ours / "summary.csv"
    assert verdict.read_instability(ours / "summary.csv").stable.tolist() == [True]
    (ours / "summary.csv").write_text(csv + "imp,imp,1,ticket,0it,80,False,False\n")  # damaged: not used
    assert not verdict.intact(ours / "summary.csv") and verdict.instability_for(summary_dir) is None


def test_networks_at_chance_are_named_and_a_dense_one_voids_the_table():
    sparse = ONE_SEED + [row("ticket", 4, 11.2, 0), row("random_reinit", 4, 10.0, 0)]
    said = verdict.lines(frame(sparse))
    assert said[-1] == ("at chance (test accuracy within 2 points of 10 %): ticket at 4 (41.0 %) 11.2 %; "
                        "random_reinit at 4 (41.0 %) 10.0 %; these networks learned nothing (too few weights, "
                        "or a learning rate too high): their comparisons above mean nothing")
    failed = [row("ticket", 0, 10.5, 0), row("ticket", 1, 88.0, 4000)]
    assert verdict.lines(frame(failed))[-1].endswith(
        "the dense network itself learned nothing: the training failed (a learning rate too high?), so no line "
        "above is a result")
    assert not any(line.startswith("at chance") for line in verdict.lines(frame(ONE_SEED)))
    # 100 classes (cifar100): chance is 1 %, and 11.2 % is not at chance
    hundred = verdict.lines(frame(sparse), chance=0.01)
    assert not any(line.startswith("at chance") for line in hundred)
    low = verdict.lines(frame(ONE_SEED + [row("ticket", 4, 2.5, 0)]), chance=0.01)
    assert low[-1].startswith("at chance (test accuracy within 2 points of 1 %): ticket at 4 (41.0 %) 2.5 %")


def test_the_printed_table_shows_mean_and_std_over_seeds_aligned_and_per_seed_on_request():
    from lth.report import summary
    rows = (seeds("ticket", 0, [90, 91, 92], [3000] * 3) + seeds("ticket", 1, [89, 91, 93], [1000, 2000, 3000])
            + seeds("random_reinit", 1, [88, 90, 92], [3000] * 3))
    table = frame(rows).assign(final_test_accuracy=lambda f: f.early_stop_test_accuracy, final_train_accuracy=1.0,
                               generalization_gap=0.0)
    means = summary.format_table(table).splitlines()
    assert len(means) == 1 + 3 and means[0].split()[:5] == ["lottery", "variant", "level", "remaining", "%"]
    assert means[2].split() == ["imp", "ticket", "1", "80.0", "3", "2000", "±", "1000", "91.00", "±", "2.00",
                                "91.00", "±", "2.00", "100.00", "±", "0.00"]
    per_seed = summary.format_table(table, per_seed=True).splitlines()
    assert len(per_seed) == 1 + 9 and [line.split()[0] for line in per_seed[1:4]] == ["s0", "s1", "s2"]
    for lines in (means, per_seed):  # every column starts where its header does
        starts = {line.index(line.split()[1]) for line in lines[1:]}
        assert starts == {lines[0].index("variant")}
