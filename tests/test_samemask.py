"""The same-mask comparison (Liu et al. 2021 Figs. 6-7) on hand-made summary tables: which
variant plays which part by the lottery's rewind point, replicate means, differences."""
import pandas as pd
import pytest

from lth.report import samemask
from lth.report.summary import COLUMNS


def row(lottery, variant, level, accuracy, seed=0, pct=None):
    out = dict.fromkeys(COLUMNS)
    out.update(run=f"{lottery} s{seed}", lottery=lottery, variant=variant, level=level, final_test_accuracy=accuracy,
               weights_remaining_pct=100.0 if level == 0 else (pct or 51.2))
    return out


def test_roles_follow_the_rewind_point_and_replicates_are_averaged():
    frame = pd.DataFrame([
        row("iterative", "ticket", 0, 0.90),
        row("iterative", "ticket", 1, 0.88), row("iterative", "ticket", 1, 0.86, seed=1),
        row("iterative", "fine_tune", 1, 0.91), row("iterative", "fine_tune", 1, 0.89, seed=1),
        row("iterative", "random_reinit", 1, 0.80), row("iterative", "random_reinit", 1, 0.82, seed=1),
        row("iterative", "random_prune", 1, 0.70),  # not part of the comparison
        row("continue", "ticket", 1, 0.92), row("continue", "reset_at_end", 1, 0.87),
    ])
    result = samemask.table(frame, {"iterative": "reset", "continue": "continue"})
    got = {(r.lottery, r.network): (r.variant, round(r.final_test_accuracy_mean, 6), r.replicates)
           for r in result.itertuples()}
    assert got == {("iterative", "pruning & fine-tuning"): ("fine_tune", 0.9, 2),
                   ("iterative", "winning ticket init"): ("ticket", 0.87, 2),
                   ("iterative", "random reinit"): ("random_reinit", 0.81, 2),
                   ("continue", "pruning & fine-tuning"): ("ticket", 0.92, 1),
                   ("continue", "winning ticket init"): ("reset_at_end", 0.87, 1)}
    assert list(result[result.lottery == "iterative"].network) == list(samemask.NETWORKS)  # plotting order
    diff = samemask.differences(result).set_index("lottery")
    assert diff.loc["iterative", "fine_tuning_minus_ticket_pp"] == pytest.approx(3.0)
    assert diff.loc["iterative", "ticket_minus_reinit_pp"] == pytest.approx(6.0)
    assert diff.loc["continue", "fine_tuning_minus_ticket_pp"] == pytest.approx(5.0)
    assert pd.isna(diff.loc["continue", "ticket_minus_reinit_pp"])


def test_plot_writes_one_panel_per_generator_and_fig_7(tmp_path):
    frame = pd.DataFrame([row(g, v, lvl, 0.9 - 0.01 * lvl, pct=100 * 0.8 ** lvl)
                          for g in ("iterative", "oneshot") for v in ("ticket", "fine_tune", "random_reinit")
                          for lvl in (1, 2, 3)])
    samemask.plot(samemask.table(frame, {}), tmp_path / "same_mask.png")
    from PIL import Image
    width, height = Image.open(tmp_path / "same_mask.png").size
    assert width == 3 * 5 * 120 and height == 4 * 120  # two generators and Fig. 7's panel, 120 dpi
