"""The plan of an experiment: every stage the validated config asks for, with its ID, inputs
and outputs (lth.plan.ids says how IDs are made).

Torch-free and pure: the Snakefile builds the plan at parse time from the validated config.
One lottery (lth.plan.chain, and its instability pairs: lth.stages.interpolate) per
combination of the list-valued keys; then the final stages over all of them, each kind's
planner after those it needs (lth.plan.registry.planned_in_order).
"""
from __future__ import annotations

import copy
import itertools

from lth.plan import config as config_mod
from lth.plan import registry
from lth.plan.chain import chain
from lth.plan.ids import EXPANDABLE, ID_LENGTH, Plan, Run, Stage, consumed, lottery_of, output_patterns, stage_id

# what the Snakefile and the tests use; the rest lives in lth.plan.ids
__all__ = ["build", "variants", "Plan", "Run", "Stage", "ID_LENGTH", "output_patterns", "consumed"]


def variants(cfg: dict) -> list[tuple[dict, dict]]:
    """(choices, scalar config) for each combination of the list-valued expandable keys."""
    listed = [(sec, key, cfg[sec][key]) for sec, key in EXPANDABLE if isinstance(cfg[sec][key], list)]
    out = []
    for combo in itertools.product(*(values for _, _, values in listed)):
        scalar = copy.deepcopy(cfg)
        choices = {}
        for (sec, key, _), value in zip(listed, combo):
            scalar[sec][key] = value
            choices[f"{sec}.{key}"] = value
        out.append((choices, scalar))
    return out


def build(cfg: dict, schema: dict | None = None) -> Plan:
    """All stages of the experiment described by a validated config."""
    defaults = config_mod.defaults(schema)
    root = cfg["results"]
    plan = Plan(config=cfg)

    from lth.stages import interpolate
    producer: dict = {}  # output path -> ID of the stage that writes it

    def make(kind, level, upstream, inputs, settings, *, layout=None, variant=None, related=None, lottery=None):
        """The stage of this kind with these settings and upstream stages (an analysis: its
        layout, and the stages it reads as `upstream`), added to the plan once. `lottery`: the
        lottery settings to record where the stage's own would mislead (an instability copy's
        data-order seed is not its lottery's train.seed)."""
        version = registry.get(kind).version
        if upstream is None:
            upstream = {name: producer[path] for name, path in inputs.items() if path in producer}
        sid = stage_id(kind, settings, upstream, defaults, version, layout)
        new = sid not in plan.stages
        if lottery is None:
            lottery = lottery_of(kind, settings, [plan.stages[u].lottery for u in upstream.values()]) if new else {}
        stage = plan.add(Stage(kind, sid, level, settings, upstream, inputs, root, version, layout, variant,
                               lottery, related or {}))
        if new:
            producer.update((path, sid) for path in stage.outputs.values())
        return stage

    for choices, scalar in variants(cfg):
        run = Run(" ".join(f"{k}={v}" for k, v in choices.items()) or "imp", choices)
        run.levels = chain(scalar, make)
        run.pairs = interpolate.pairs(scalar, run, plan, make)
        plan.runs.append(run)

    for kind in registry.planned_in_order():
        made = kind.plan(cfg, plan, make)
        plan.finals[kind.name] = [] if made is None else made if isinstance(made, list) else [made]
    return plan


