"""Pruning strategy declarations: each strategy is one `Strategy` (its name, the function
that prunes one round, how it ranks and its own settings), registered here or by a plugin
(lth.plan.plugins). The schema's `prune.strategy` enum, its settings' schema
(`prune.<strategy>.<key>`, hashed into prune IDs only when not at their defaults) and the
config checks before any job follow from these. Torch-free; the function is imported only
by the prune job.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lth.plan import plugins, steps

# How a strategy ranks, which decides what the config can check before any job:
PER_LAYER = "per_layer"  # each tensor at its own rate: every layer's count is known in advance
GLOBAL = "global"        # the hidden tensors ranked together at one rate, the output layer on its own


@dataclass(frozen=True)
class Strategy:
    name: str
    # "module:function" pruning one round: (weights, mask, rates, output_layer, settings) -> mask,
    # numpy arrays by tensor name; rates: tensor -> fraction of its survivors to remove
    function: str
    ranks: str = PER_LAYER
    # its own config keys, prune.<name>.<key>: {key: JSON schema with a default}
    settings: dict = field(default_factory=dict)
    description: str = ""
    # the stage kind that makes its masks: "prune" (from trained weights, no data) or a kind
    # with the prune stage's planner signature and a "mask" output (ADMM trains: lth.stages.admm)
    stage: str = "prune"

    def prune_round(self):
        return plugins.resolve(self.function)


_STRATEGIES = plugins.Registry("pruning strategy")
get, names = _STRATEGIES.get, _STRATEGIES.names


def register(strategy: Strategy) -> Strategy:
    if strategy.ranks not in (PER_LAYER, GLOBAL):
        raise ValueError(f"pruning strategy {strategy.name!r}: ranks must be {PER_LAYER!r} or {GLOBAL!r}")
    if any("default" not in schema for schema in strategy.settings.values()):
        raise ValueError(f"pruning strategy {strategy.name!r}: every setting needs a default (IDs omit it)")
    return _STRATEGIES.register(strategy)


def settings(cfg: dict, name: str) -> dict:
    """The strategy's own settings from a validated config ({} for a strategy without any)."""
    return dict(cfg["prune"].get(name, {})) if get(name).settings else {}


register(Strategy("layerwise", "lth.nn.pruning:layerwise_round", PER_LAYER,
                  description="each layer ranked on its own"))
register(Strategy("global", "lth.nn.pruning:global_round", GLOBAL,
                  description="hidden layers ranked together"))

_STEP = steps.schema()
register(Strategy("admm", "lth.nn.pruning:layerwise_round", PER_LAYER, stage="admm",
                  description="ADMM (Zhang et al. 2018), then each layer cut to its count",
                  settings={
                      "rho": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000, "default": 0.001,
                              "description": "a number in (0, 1000]: ADMM's initial penalty rho (Zhang et al. "
                                             "raise it over the run, e.g. 1e-4 -> 1e-2)"},
                      "rho_growth": {"type": "number", "minimum": 1, "maximum": 100, "default": 1.3,
                                     "description": "a number in [1, 100]: rho is multiplied by it at every dual "
                                                    "update (1e-3 -> ~1e-2 over the default 9 updates)"},
                      "iterations": {**_STEP, "default": "3000it",
                                     "description": "the ADMM training's length from the trained weights: "
                                                    "iterations or a string like 3000it or 2ep"},
                      "update_every": {**_STEP, "default": "300it",
                                       "description": "steps between ADMM's Z and U updates: iterations or a "
                                                      "string like 300it or 1ep"},
                  }))
