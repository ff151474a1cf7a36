"""Ticket classes of Ma et al. (NeurIPS 2021, "Sanity checks for lottery tickets: does your
winning ticket really win the jackpot?"). At a sparsity s a ticket must meet:

1. a non-trivial sparsity ratio s and sufficient training epochs T;
2. a clear accuracy advantage over a small dense network of the same parameter count;
3. there is an lr at which the ticket (theta_0 ⊙ m)_T beats its random reinitialisation
   (theta'_0 ⊙ m)_T trained with ANY lr by more than 0.5 %;
4. there is an lr at which the ticket >= the dense network theta_T trained at the same lr;
5. there is an lr at which the ticket >= the dense network well trained (at its best lr).

Jackpot winning ticket = 1∧2∧3∧4∧5; secondary prize ticket = 1∧2∧3∧4; otherwise neither.

Operational definitions (ours where the paper is informal):
- One input row per training run: group (the lottery without its lr; classification is per
  group), lr, variant ("ticket", "random_reinit", "small_dense"; others are ignored), level
  (0 = the dense network, variant "ticket"), weights_remaining_pct, final_test_accuracy,
  final_val_accuracy, early_stop_iteration, final_iteration. Rows sharing (group, lr,
  variant, level) are replicates (seeds): their accuracies are averaged first.
- Accuracies compared are mean FINAL test accuracies: the paper's setting is a sufficiently
  trained network evaluated at the end, not an early-stopped one.
- C1: sparsity = 1 - weights_remaining_pct / 100 (mean over the level's ticket rows)
  >= min_sparsity, and training is sufficient: every dense run of the group (every lr and
  replicate) reached its minimum validation loss before the end, early_stop_iteration <
  final_iteration. A validation loss still falling at the end means T was too short.
- C2: max_lr ticket - max_lr small_dense (same level) > margin.
- C3: max_lr ticket - max_lr random_reinit (same level) > margin: the ticket at its best lr
  beats the reinit at every lr, i.e. at the reinit's best.
- C4: some lr with ticket(lr) >= dense(lr) - tolerance (dense at the same group and lr).
- C5: max_lr ticket >= dense_test(lr*) - tolerance, lr* the dense lr of highest mean final
  VALIDATION accuracy: the test set never chooses anything.
- Ties in a best lr go to the smallest lr. Margins are strict, tolerances inclusive; exact
  float comparisons (no epsilon), so a difference landing on the margin may go either way.
- Defaults: min_sparsity 0.5, margin 0.005 (0.5 %), tolerance 0.0.

Ma et al.'s Table 3 also states two observations per network, "prefer small lr" and
"prefer IMP", each yes / no / at boundary (✓ ✗ △); the paper gives no rule, ours is:
- prefer_small_lr: the ticket's mean final test accuracy at the group's smallest lr minus
  at its largest: "yes" above the margin, "no" below minus the margin, else "at boundary";
  "n/a" with one lr.
- prefer_imp: the best-lr ticket of the iterative group minus that of the one-shot group
  that differs from it only in prune.schedule (its `family`), at the same level: the same
  three answers, on both groups' rows; "n/a" without such a partner.
Torch-free.
"""
from __future__ import annotations

import pandas as pd

DEFAULTS = {"min_sparsity": 0.5, "margin": 0.005, "tolerance": 0.0}
CONDITIONS = ["c1_sparsity_and_training", "c2_beats_small_dense", "c3_beats_reinit",
              "c4_matches_dense_same_lr", "c5_matches_best_dense"]
COLUMNS = ["group", "level", "weights_remaining_pct", "sparsity", "ticket_best_accuracy", "ticket_best_lr",
           "reinit_best_accuracy", "small_dense_best_accuracy", "dense_best_lr", "dense_best_accuracy",
           *CONDITIONS, "prize", "prefer_small_lr", "prefer_imp"]
OBSERVATIONS = ["prefer_small_lr", "prefer_imp"]
REQUIRED = {"group", "lr", "variant", "level", "weights_remaining_pct", "final_test_accuracy",
            "final_val_accuracy", "early_stop_iteration", "final_iteration"}
CONTROLS = ("random_reinit", "small_dense")


def _means(frame: pd.DataFrame) -> pd.DataFrame:
    """Replicate means per (group, variant, level, lr), sorted by lr so that idxmax's first
    maximum is the smallest lr."""
    cols = ["final_test_accuracy", "final_val_accuracy"]
    return (frame.groupby(["group", "variant", "level", "lr"], sort=False)[cols].mean()
            .reset_index().sort_values(["group", "variant", "level", "lr"], kind="stable"))


def _best(rows: pd.DataFrame, by: str = "final_test_accuracy") -> pd.Series:
    return rows.loc[rows[by].idxmax()]


def _prize(conditions: list[bool]) -> str:
    if all(conditions[:4]):
        return "jackpot" if conditions[4] else "secondary prize"
    return "neither"


def _prefer(difference: float, margin: float) -> str:
    return "yes" if difference > margin else "no" if difference < -margin else "at boundary"


def _prefer_imp(rows: list[dict], families: dict, margin: float) -> None:
    """Fill prefer_imp on the rows of iterative / one-shot partner groups (the module);
    `families`: group -> (family, prune.schedule)."""
    best: dict = {}  # (family, level) -> {schedule: the ticket's best-lr accuracy}
    for r in rows:
        if r["group"] in families:
            family, schedule = families[r["group"]]
            best.setdefault((family, r["level"]), {})[schedule] = r["ticket_best_accuracy"]
    for r in rows:
        pair = best.get((families.get(r["group"], (None, None))[0], r["level"]), {})
        if {"iterative", "oneshot"} <= set(pair):
            r["prefer_imp"] = _prefer(pair["iterative"] - pair["oneshot"], margin)


def classify(frame: pd.DataFrame, settings: dict | None = None) -> pd.DataFrame:
    """One row per (group, level >= 1): the five conditions and the prize (see the module)."""
    unknown = set(settings or {}) - set(DEFAULTS)
    if unknown:  # a misspelt threshold would otherwise silently fall back to its default
        raise ValueError(f"unknown ticket-class settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **(settings or {})}
    missing = REQUIRED - set(frame.columns)
    if missing:
        raise ValueError(f"ticket classes need columns {sorted(missing)}")
    frame = frame[frame.variant.isin(("ticket", *CONTROLS))]
    means = _means(frame)
    rows = []
    for group, runs in means.groupby("group", sort=False):
        dense_runs = frame[(frame.group == group) & (frame.variant == "ticket") & (frame.level == 0)]
        if dense_runs.empty:
            raise ValueError(f"group {group!r} has no dense network (variant ticket, level 0)")
        # every dense replicate at every lr must have found its minimum before the end
        trained = bool((dense_runs.early_stop_iteration < dense_runs.final_iteration).all())
        dense = runs[(runs.variant == "ticket") & (runs.level == 0)]
        best_dense = _best(dense, by="final_val_accuracy")
        for level in sorted(int(v) for v in runs.level.unique() if v >= 1):
            at = runs[runs.level == level]
            for variant in ("ticket", *CONTROLS):
                if not (at.variant == variant).any():
                    raise ValueError(f"group {group!r} level {level} has no {variant} runs; the ticket classes "
                                     "need `controls.random_reinit: true` and `controls.small_dense: true`")
            ticket = at[at.variant == "ticket"]
            best = _best(ticket)
            reinit = at[at.variant == "random_reinit"].final_test_accuracy.max()
            small = at[at.variant == "small_dense"].final_test_accuracy.max()
            pct = float(frame[(frame.group == group) & (frame.variant == "ticket")
                              & (frame.level == level)].weights_remaining_pct.mean())
            sparsity = 1.0 - pct / 100.0
            paired = ticket.merge(dense, on="lr", suffixes=("", "_dense"))  # lrs both were trained at
            conditions = [
                sparsity >= cfg["min_sparsity"] and trained,
                best.final_test_accuracy - small > cfg["margin"],
                best.final_test_accuracy - reinit > cfg["margin"],
                bool((paired.final_test_accuracy >= paired.final_test_accuracy_dense - cfg["tolerance"]).any()),
                best.final_test_accuracy >= best_dense.final_test_accuracy - cfg["tolerance"],
            ]
            conditions = [bool(c) for c in conditions]
            lrs = ticket.sort_values("lr")  # replicate means, one row per lr
            small_lr = (_prefer(lrs.final_test_accuracy.iloc[0] - lrs.final_test_accuracy.iloc[-1], cfg["margin"])
                        if len(lrs) > 1 else "n/a")
            rows.append({
                "group": group, "level": level, "weights_remaining_pct": pct, "sparsity": sparsity,
                "ticket_best_accuracy": float(best.final_test_accuracy), "ticket_best_lr": float(best.lr),
                "reinit_best_accuracy": float(reinit), "small_dense_best_accuracy": float(small),
                "dense_best_lr": float(best_dense.lr), "dense_best_accuracy": float(best_dense.final_test_accuracy),
                **dict(zip(CONDITIONS, conditions)), "prize": _prize(conditions),
                "prefer_small_lr": small_lr, "prefer_imp": "n/a",
            })
    if {"family", "schedule"} <= set(frame.columns):  # (family, schedule) of each group
        families = {g: (f, s) for g, f, s in frame[["group", "family", "schedule"]].drop_duplicates().itertuples(index=False)}
        _prefer_imp(rows, families, cfg["margin"])
    return pd.DataFrame(rows, columns=COLUMNS)


def plot(result: pd.DataFrame, path) -> None:
    """One panel per group: the five conditions, the prize and Table 3's two observations
    (rows) at each level (columns, labelled with weights remaining), green = met / yes,
    red = not met / no, sand = at boundary, grey = n/a."""
    from matplotlib.colors import ListedColormap

    from lth.report.plots import _figure, _save

    labels = ["1 sparsity, training", "2 > small dense", "3 > reinit (any lr)",
              "4 >= dense, same lr", "5 >= best dense", "prize", "prefer small lr", "prefer IMP"]
    codes = {False: 0, True: 1, "neither": 2, "secondary prize": 3, "jackpot": 4,
             "no": 0, "yes": 1, "n/a": 2, "at boundary": 5}
    cmap = ListedColormap(["#e8a0a0", "#9fd49f", "#d9d9d9", "#c0c8e0", "#f2cf5b", "#f3e3b3"])
    short = {"neither": "neither", "secondary prize": "secondary", "jackpot": "jackpot"}
    groups = list(dict.fromkeys(result.group)) or [""]
    levels = int(result.groupby("group").size().max()) if len(result) else 1
    size = (max(4.0, 2.2 + 0.7 * levels), 3.2 * len(groups))  # grows with the levels and groups
    plt, fig, axes = _figure(len(groups), 1, figsize=size, squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        rows = result[result.group == group].sort_values("level")
        cells = ([[codes[bool(v)] for v in rows[c]] for c in CONDITIONS] + [[codes[p] for p in rows.prize]]
                 + [[codes[v] for v in rows[c]] for c in OBSERVATIONS])
        ax.imshow(cells if len(rows) else [[2]] * len(labels), cmap=cmap, vmin=0, vmax=5, aspect="auto")
        for j, (_, row) in enumerate(rows.iterrows()):
            for i, c in enumerate(CONDITIONS):
                ax.text(j, i, "yes" if row[c] else "no", ha="center", va="center", fontsize=7)
            ax.text(j, 5, short[row.prize], ha="center", va="center", fontsize=7, weight="bold")
            for i, c in enumerate(OBSERVATIONS, start=6):  # Table 3's observations, below the prize
                ax.text(j, i, {"at boundary": "boundary"}.get(row[c], row[c]), ha="center", va="center", fontsize=7)
        ax.axhline(5.5, color="white", linewidth=2)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([f"L{lv}\n{pct:.3g} %" for lv, pct in zip(rows.level, rows.weights_remaining_pct)],
                           fontsize=7)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_title(str(group), fontsize=8)
        ax.set_xlabel("level, weights remaining", fontsize=7)
    _save(plt, fig, path)
