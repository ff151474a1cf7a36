"""The verdict of a summary table: a few plain lines that say what the table shows.

Computed from the per-level table (lth.report.summary) with every lottery's replicates (init and
data-order seeds) averaged first (lth.report.summary.replicates), and optionally from the
instability stage's summary.csv (lth.report.instability.summarise). Rules:

- Ticket vs each control (random_reinit, random_prune, small_dense) that ran, at the levels
  where both ran: the ticket *beats* the control on accuracy where its mean test accuracy
  at the early-stopping iteration is higher, and on speed where its mean early-stop
  iteration is earlier. Equal means (within TIE, floating-point noise) are ties: neither
  beats. A gap is *beyond the spread* when it exceeds the ticket's standard deviation over
  seeds plus the control's (one std band each side does not touch); with one seed there is
  no spread, and the line says so.
- The ticket *matches the dense network* (level 0's ticket) at a pruned level where its
  mean early-stop test accuracy is at least the dense mean minus an allowance: `tolerance`
  percentage points (default 0: the dense accuracy itself, Frankle & Carbin's "at least
  commensurate accuracy" read strictly) plus, when the dense network has several seeds, its
  standard deviation over them. A matching level that also stops no later (mean early-stop
  iteration) than the dense network is a winning ticket in Frankle & Carbin's sense. The
  verdict names the sparsest matching level, the denser levels that do not match, and the
  sparsest winning ticket when it is another level.
- Instability (Frankle et al. 2020): the networks flagged stable and matching by the
  instability stage (its threshold and matching drop) in every run of the lottery.
- At chance: a training whose mean test accuracy, at early stop and at the end, is within
  AT_CHANCE of chance (1 / the dataset's classes: 10 % but for cifar100) learned nothing; the
  verdict names them (a dense network there means the training failed, most likely its
  learning rate; a sparse one, too few weights), since their comparisons mean nothing.

Accuracies are in percent, gaps in percentage points. Torch-free and pure (`lines`); the
rest finds the instability table that belongs to a summary directory.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

CONTROLS = ("random_reinit", "random_prune", "small_dense")
FILE = "verdict.txt"
TIE = 1e-9  # means closer than this (fraction or iterations) are equal: summation-order noise
CHANCE = 0.10  # 1 / classes of a 10-class dataset: the default; the summary passes its dataset's
AT_CHANCE = 0.02  # within 2 points of chance: learned nothing


def lines(summary_frame: pd.DataFrame, instability_frame: pd.DataFrame | None = None,
          tolerance: float = 0.0, chance: float = CHANCE) -> list[str]:
    """The verdict of a summary table (lth.report.summary.COLUMNS), one string per line; see the
    module for the rules. `tolerance`: percentage points below the dense accuracy that
    still match it."""
    from lth.report.summary import replicates
    if summary_frame is None or summary_frame.empty:
        return ["empty summary: nothing to judge"]
    stats = replicates(summary_frame).sort_values(["level"], kind="stable")
    lotteries = list(dict.fromkeys(summary_frame.lottery))
    controls = [c for c in CONTROLS if (stats.variant == c).any()]
    out = []
    if not controls:
        out.append("no control ran: enable controls.random_reinit (or random_prune, small_dense) to see "
                   "whether the ticket's accuracy and speed beat its reinitialisation's")
    for lottery in lotteries:
        prefix = f"{lottery}: " if len(lotteries) > 1 else ""
        rows = stats[stats.lottery == lottery]
        ticket = rows[rows.variant == "ticket"].set_index("level")
        for control in controls:
            other = rows[rows.variant == control].set_index("level")
            if other.empty:
                continue
            out.append(prefix + _accuracy_line(ticket, other, control))
            out.append(prefix + _iteration_line(ticket, other, control))
        out.append(prefix + _matching_line(ticket, tolerance))
        collapsed = _chance_line(rows, chance)
        if collapsed:
            out.append(prefix + collapsed)
    if instability_frame is not None and not instability_frame.empty:
        for lottery in lotteries:
            prefix = f"{lottery}: " if len(lotteries) > 1 else ""
            rows = instability_frame[instability_frame.lottery == lottery]
            if not rows.empty:
                out.append(prefix + instability_line(rows))
    return out


def write(path, text_lines: list[str]) -> None:
    """The verdict as a text file, one line each (atomically)."""
    from lth.store.artifacts import atomic_path
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in text_lines))


# --- pieces ---------------------------------------------------------------------------

def _level(level, row) -> str:
    return f"{int(level)} ({row.weights_remaining_pct_mean:.1f} %)"


def _levels(items) -> str:
    return ", ".join(items) if items else "none"


def _iterations(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 1e-6 else f"{value:.1f}"


def _count(items) -> str:
    return f"{len(items)} level" + ("" if len(items) == 1 else "s")


def _number(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def _compare(ticket, other, column: str, sign: float) -> list[tuple]:
    """(level, ticket row, control row, gap, spread or None) at every level both ran, the
    gap positive where the ticket is better (`sign` +1: higher is better, -1: lower)."""
    out = []
    for level in sorted(set(ticket.index) & set(other.index)):
        t, c = ticket.loc[level], other.loc[level]
        gap = sign * (t[f"{column}_mean"] - c[f"{column}_mean"])
        spread = None
        if t.replicates > 1 and c.replicates > 1:
            spread = float(t[f"{column}_std"] + c[f"{column}_std"])
        out.append((level, t, c, float(gap), spread))
    return out


def _split(compared) -> tuple[list, list, list]:
    beats = [x for x in compared if x[3] > TIE]
    loses = [x for x in compared if x[3] < -TIE]
    ties = [x for x in compared if abs(x[3]) <= TIE]
    return beats, loses, ties


def _range(values, unit: str, fmt) -> str:
    low, high = min(values), max(values)
    return f"by {fmt(low)} {unit}" if fmt(low) == fmt(high) else f"by {fmt(low)} to {fmt(high)} {unit}"


def _spread_clause(beats, compared) -> str:
    """Whether each winning gap exceeds the spread over seeds."""
    seeds = {int(x[1].replicates) for x in compared} | {int(x[2].replicates) for x in compared}
    if max(seeds) <= 1:
        return "one seed: no spread to compare"
    if not beats:
        return ""
    over = f"over {seeds.pop()} seeds" if len(seeds) == 1 else "over seeds"
    beyond = [_level(x[0], x[1]) for x in beats if x[4] is not None and x[3] > x[4]]
    within = [_level(x[0], x[1]) for x in beats if x[4] is not None and x[3] <= x[4]]
    single = [_level(x[0], x[1]) for x in beats if x[4] is None]
    if beyond:
        parts = [f"the gap exceeds the spread {over} (ticket std + control std) at {_levels(beyond)}"]
        if within:
            parts.append(f"not at {_levels(within)}")
    else:  # never "exceeds ... at none": say what holds
        parts = [f"the gap is within the spread {over} (ticket std + control std) at {_levels(within)}"] if within \
            else []
    if single:
        parts.append(f"one seed, no spread, at {_levels(single)}")
    return ", ".join(parts)


def _comparison_line(control: str, what: str, words: tuple, compared, gap, unit: str, fmt, listed) -> str:
    """One line of the ticket against a control on one column: where it is better (`words`:
    better, worse, same), by how much (`gap` of a compared tuple, in `unit` shown by `fmt`),
    each level as `listed` shows it, and the spread clause."""
    beats, loses, ties = _split(compared)
    better, worse, same = words
    text = f"vs {control}, {what}: the ticket's mean is {better} at {len(beats)} of {_count(compared)}"
    if beats:
        text += f", {_range([gap(x) for x in beats], unit, fmt)}: {listed(beats)}"
    if loses:
        text += f"; {worse} at {listed(loses)}"
    if ties:
        text += f"; {same} at {_levels([_level(x[0], x[1]) for x in ties])}"
    clause = _spread_clause(beats, compared)
    return text + (f"; {clause}" if clause else "")


def _accuracy_line(ticket, other, control: str) -> str:
    def listed(items):
        return "; ".join(f"{_level(x[0], x[1])} {100 * x[3]:+.2f}" for x in items)
    return _comparison_line(control, "test accuracy at early stop", ("higher", "lower", "tied"),
                            _compare(ticket, other, "early_stop_test_accuracy", +1.0),
                            lambda x: 100 * x[3], "points", _number, listed)


def _iteration_line(ticket, other, control: str) -> str:
    def listed(items):
        return "; ".join(f"{_level(x[0], x[1])} {_iterations(x[1].early_stop_iteration_mean)} vs "
                         f"{_iterations(x[2].early_stop_iteration_mean)}" for x in items)
    return _comparison_line(control, "early-stop iteration", ("earlier", "later", "the same"),
                            _compare(ticket, other, "early_stop_iteration", -1.0),
                            lambda x: x[3], "iterations", _iterations, listed)


def _matching_line(ticket, tolerance: float) -> str:
    if 0 not in ticket.index:
        return "no dense network (level 0) in the table: nothing to match"
    dense = ticket.loc[0]
    pruned = ticket[ticket.index > 0]
    if pruned.empty:
        return "no pruned level yet: nothing to match against the dense network"
    spread = float(dense.early_stop_test_accuracy_std) if dense.replicates > 1 else 0.0
    allowance = tolerance + 100 * spread  # points
    dense_acc = 100 * float(dense.early_stop_test_accuracy_mean)
    floor = dense_acc - allowance
    if dense.replicates > 1 and tolerance:
        rule = f"dense minus {_number(tolerance)} points tolerance and its std over {int(dense.replicates)} seeds"
    elif dense.replicates > 1:
        rule = f"dense minus its std over {int(dense.replicates)} seeds"
    elif tolerance:
        rule = f"dense minus {_number(tolerance)} points tolerance"
    else:
        rule = "the dense accuracy itself, one seed"
    head = (f"matching the dense network ({_number(dense_acc)} % test accuracy at early stop; "
            f"a level matches at >= {_number(floor)} %: {rule})")
    accuracy = 100 * pruned.early_stop_test_accuracy_mean
    matches = accuracy >= floor - 100 * TIE
    if not matches.any():
        best = accuracy.idxmax()
        return (f"{head}: no pruned level matches; the closest, {_level(best, pruned.loc[best])}, reaches "
                f"{_number(accuracy[best])} % ({accuracy[best] - dense_acc:+.2f} points)")
    sparsest = max(pruned.index[matches.to_numpy()])
    row = pruned.loc[sparsest]
    dense_it = float(dense.early_stop_iteration_mean)
    faster = pruned.early_stop_iteration_mean <= dense_it + TIE
    text = (f"{head}: sparsest matching level {_level(sparsest, row)} at {_number(accuracy[sparsest])} %, "
            f"early stop at iteration {_iterations(row.early_stop_iteration_mean)} vs the dense "
            f"{_iterations(dense_it)}")
    if faster[sparsest]:
        text += " (no later: a winning ticket)"
    else:
        winners = pruned.index[(matches & faster).to_numpy()]
        text += " (later); the sparsest that also stops no later (a winning ticket): " + (
            _level(max(winners), pruned.loc[max(winners)]) if len(winners) else "none")
    short = [lvl for lvl in pruned.index[~matches.to_numpy()] if lvl < sparsest]
    if short:
        text += f"; denser levels that do not match: {_levels([_level(lvl, pruned.loc[lvl]) for lvl in short])}"
    return text


def _chance_line(rows: pd.DataFrame, chance: float = CHANCE) -> str | None:
    """The trainings of one lottery at chance accuracy, by variant, or None."""
    best = rows[["early_stop_test_accuracy_mean", "final_test_accuracy_mean"]].max(axis=1, skipna=True)
    flat = rows[best <= chance + AT_CHANCE]
    if flat.empty:
        return None
    parts = []
    for variant, group in flat.groupby("variant", sort=False):
        levels = [f"{_level(r.level, r)} {100 * best[i]:.1f} %" for i, r in zip(group.index, group.itertuples())]
        parts.append(f"{variant} at {_levels(levels)}")
    dense = ((flat.variant == "ticket") & (flat.level == 0)).any()
    why = ("the dense network itself learned nothing: the training failed (a learning rate too high?), so "
           "no line above is a result" if dense else "these networks learned nothing (too few weights, or a "
           "learning rate too high): their comparisons above mean nothing")
    return (f"at chance (test accuracy within {100 * AT_CHANCE:.0f} points of {100 * chance:g} %): "
            + "; ".join(parts) + f"; {why}")


def instability_line(rows: pd.DataFrame) -> str:
    """Networks stable and matching in every run of the lottery (instability summary rows)."""
    good, partial, bad = [], [], []
    keys = ["level", "variant", "k"]
    ordered = rows.sort_values("level", kind="stable")
    for (level, variant, k), group in ordered.groupby(keys, sort=False):
        name = f"{int(level)} ({float(group.weights_remaining_pct.mean()):.1f} %)"
        if variant != "ticket":
            name += f" {variant}"
        if str(k) not in ("0it", "0", "0ep"):
            name += f" k={k}"
        both = (group.stable.astype(bool) & group.matching.astype(bool))
        if both.all():
            good.append(name)
        elif both.any():
            partial.append(f"{name} in {int(both.sum())} of {len(group)} runs")
        else:
            why = [w for w, flag in (("unstable", group.stable.astype(bool).any()),
                                     ("not matching", group.matching.astype(bool).any())) if not flag]
            bad.append(f"{name} ({', '.join(why) if why else 'never both in one run'})")
    text = f"instability: stable and matching at {_levels(good) if good else 'no level'}"
    if partial:
        text += f"; in some runs only: {_levels(partial)}"
    if bad:
        text += f"; not at {_levels(bad)}"
    return text


# --- finding the instability table of a summary -----------------------------------------

def instability_for(summary_dir) -> Path | None:
    """The summary.csv of a finished instability stage in the same results folder planned
    with this summary (its spec's `related` names the summary: lth.stages.instability); the
    newest when several are, None when none is. Stages finished before instability specs
    named their summary are not found: rerun the instability stage to link one."""
    from lth.store.artifacts import ArtifactError, read_json
    summary_dir = Path(summary_dir)
    found = []
    for stage in (summary_dir.parent.parent / "instability").glob("*"):
        table = stage / "summary.csv"
        if not intact(table):
            continue
        try:
            if read_json(stage / "spec.json").get("related", {}).get("summary") == summary_dir.name:
                found.append(table)
        except (ArtifactError, AttributeError):
            continue
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def intact(path) -> bool:
    """Whether a stage's file exists and matches its stage's record (lth.store.records)."""
    from lth.store.records import problems
    path = Path(path)
    return path.is_file() and not problems(path.parent, {path.name})


def read_instability(path) -> pd.DataFrame | None:
    """An instability summary.csv (None when the path is None or missing)."""
    if path is None or not Path(path).is_file():
        return None
    return pd.read_csv(path)
