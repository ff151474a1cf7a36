"""The same-mask comparison of Liu et al. (ICML 2021, Figs. 6-7): on the very mask of each
level, pruning & fine-tuning (the weights the mask was cut from, trained on), the winning
ticket's initialisation (theta_0 ⊙ m, or theta_k ⊙ m when rewinding) and a random
reinitialisation, one panel per mask generator (a lottery: iterative, one-shot, ADMM ...).

Which summary variant plays which part depends on the lottery's rewind point: in a
rewinding lottery the ticket is the winning-ticket init and `fine_tune` the fine-tuning; in
a continue lottery the ticket is itself the fine-tuning and `reset_at_end` (theta_0 ⊙ m)
the winning-ticket init. Accuracies are mean final test accuracies over replicates (a
sufficiently trained network, as in the paper), with their standard deviation.
Torch-free.
"""
from __future__ import annotations

import pandas as pd

FINE_TUNING, TICKET_INIT, REINIT = "pruning & fine-tuning", "winning ticket init", "random reinit"
NETWORKS = (FINE_TUNING, TICKET_INIT, REINIT)
ALL = "every mask generator (Fig. 7)"
COLUMNS = ["lottery", "rewind", "level", "weights_remaining_pct", "network", "variant", "final_test_accuracy_mean",
           "final_test_accuracy_std", "replicates"]


def roles(rewind: str) -> dict:
    """variant -> network, for a lottery rewinding to `rewind`."""
    if rewind == "continue":
        return {"ticket": FINE_TUNING, "reset_at_end": TICKET_INIT, "random_reinit": REINIT}
    return {"fine_tune": FINE_TUNING, "ticket": TICKET_INIT, "random_reinit": REINIT}


def table(summary: pd.DataFrame, rewind_of: dict) -> pd.DataFrame:
    """One row per (lottery, pruned level, network present); `rewind_of`: lottery -> rewind.to."""
    from lth.report.summary import replicates
    stats = replicates(summary[summary.level >= 1])
    rows = []
    for r in stats.itertuples(index=False):
        network = roles(rewind_of.get(r.lottery, "reset")).get(r.variant)
        if network is not None:
            rows.append({"lottery": r.lottery, "rewind": rewind_of.get(r.lottery, "reset"), "level": r.level,
                         "weights_remaining_pct": r.weights_remaining_pct_mean, "network": network,
                         "variant": r.variant, "final_test_accuracy_mean": r.final_test_accuracy_mean,
                         "final_test_accuracy_std": r.final_test_accuracy_std, "replicates": r.replicates})
    out = pd.DataFrame(rows, columns=COLUMNS)
    order = {n: i for i, n in enumerate(NETWORKS)}
    return out.sort_values(["lottery", "level", "network"], key=lambda c: c.map(order) if c.name == "network" else c,
                           kind="stable").reset_index(drop=True)


def differences(result: pd.DataFrame) -> pd.DataFrame:
    """Per lottery and level: fine-tuning minus the ticket init, the ticket init minus the
    reinit (percentage points), where both were trained."""
    wide = result.pivot_table(index=["lottery", "level", "weights_remaining_pct"], columns="network",
                              values="final_test_accuracy_mean").reset_index()
    for a, b, name in ((FINE_TUNING, TICKET_INIT, "fine_tuning_minus_ticket_pp"),
                       (TICKET_INIT, REINIT, "ticket_minus_reinit_pp")):
        wide[name] = 100 * (wide[a] - wide[b]) if a in wide and b in wide else float("nan")
    return wide[["lottery", "level", "weights_remaining_pct", "fine_tuning_minus_ticket_pp", "ticket_minus_reinit_pp"]]


def plot(result: pd.DataFrame, path) -> None:
    """Liu et al. Fig. 6: per mask generator, test accuracy against weights remaining for
    the three trainings on the same mask (bands: +- one std over replicates); with several
    generators, Fig. 7's panel beside them: fine-tuning and ticket init of each."""
    from lth.report.plots import _panels, _save, remaining_axis
    lotteries = list(dict.fromkeys(result.lottery)) or [""]
    together = len(lotteries) > 1  # Fig. 7: fine-tuning and the ticket init of every generator on one panel
    plt, fig, panels = _panels(lotteries + [ALL] * together, per_panel=(5, 4))
    styles = {FINE_TUNING: ("s-", "C2"), TICKET_INIT: ("o-", "C0"), REINIT: ("^:", "C3")}
    low = 100 * result.final_test_accuracy_mean.min() if len(result) else 0
    for lottery in lotteries:
        ax, mine = panels[lottery][0], result[result.lottery == lottery]
        for network in NETWORKS:
            rows = mine[mine.network == network]
            if rows.empty:
                continue
            style, colour = styles[network]
            x, y = rows.weights_remaining_pct, 100 * rows.final_test_accuracy_mean
            ax.plot(x, y, style, color=colour, label=network)
            spread = 100 * rows.final_test_accuracy_std.fillna(0)
            ax.fill_between(x, y - spread, y + spread, color=colour, alpha=0.15)
        remaining_axis(ax)
        ax.set_ylim(bottom=max(0, low - 0.5))
        ax.set_ylabel("final test accuracy (%)")
        ax.set_title(lottery, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if together:
        ax = panels[ALL][0]
        for i, lottery in enumerate(lotteries):
            mine = result[result.lottery == lottery]
            for network, style in ((FINE_TUNING, "s-"), (TICKET_INIT, "o--")):
                rows = mine[mine.network == network]
                if len(rows):
                    ax.plot(rows.weights_remaining_pct, 100 * rows.final_test_accuracy_mean, style, color=f"C{i}",
                            label=f"{lottery.replace('prune.', '')}: {network}")
        remaining_axis(ax)
        ax.set_title(ALL, fontsize=9)
        ax.set_ylim(bottom=max(0, low - 0.5))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=5, loc="lower left", ncol=1 if len(lotteries) < 3 else 2)
    _save(plt, fig, path)
