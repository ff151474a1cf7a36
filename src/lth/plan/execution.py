"""Execution keys: how and where a job runs, never what it computes (in no stage ID). Each
is declared once, in the schema (`x-execution: true`; `x-flag` says how a job gets it:
`always`, `when-set` (not at its default) or `rule` (the rule's own threads)); from that
follow the rule's flags (`flags`, called by workflow/rules/common.smk), the job's argparse
(`add_arguments`), the job's `Execution` record, the keys a preset keeps (lth.plan.config)
and the configuration reference (docs/configuration.md). Torch-free.
"""
from __future__ import annotations

import shlex
from dataclasses import make_dataclass
from functools import lru_cache


@lru_cache(maxsize=1)
def declared() -> tuple:
    """(dotted key, flag kind, its schema) of every key passed to jobs, in schema order."""
    from lth.plan.config import raw_schema
    out = []

    def walk(node, prefix):
        for key, sub in node.get("properties", {}).items():
            if sub.get("x-flag"):
                out.append((prefix + key, sub["x-flag"], sub))
            walk(sub, f"{prefix}{key}.")
    walk(raw_schema(), "")
    return tuple(out)


def _option(dotted: str) -> str:
    return "--" + dotted.rpartition(".")[2].replace("_", "-")


def _field(dotted: str) -> str:
    return dotted.rpartition(".")[2]


def _value(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def flags(cfg: dict) -> str:
    """A job's execution flags for a validated config: fixed-size, `always` keys first."""
    parts = []
    for when in ("always", "when-set"):
        for dotted, kind, sub in declared():
            value = _value(cfg, dotted)
            if kind != when or (when == "when-set" and value == sub.get("default")):
                continue
            if sub.get("type") == "boolean":
                parts.append(_option(dotted))
            else:
                parts.append(f"{_option(dotted)} {shlex.quote(str(value))}")
    return " ".join(parts)


def _types(sub: dict) -> set:
    kinds = sub.get("type", [])
    return {kinds} if isinstance(kinds, str) else set(kinds)


def add_arguments(parser) -> None:
    """The job's options, one per execution key (defaults: the schema's; `rule`: none)."""
    for dotted, kind, sub in declared():
        types, default = _types(sub), None if kind == "rule" else sub.get("default")
        if "boolean" in types:
            parser.add_argument(_option(dotted), action="store_true")
            continue
        convert = int if "integer" in types and "string" not in types else \
            float if "number" in types else str
        parser.add_argument(_option(dotted), type=convert, default=default, choices=sub.get("enum"),
                            help=sub.get("description"))


@lru_cache(maxsize=1)
def record_type():
    """The job's Execution record: one field per execution key, the schema's defaults."""
    fields = [(_field(dotted), object, None if kind == "rule" else sub.get("default")) for dotted, kind, sub in declared()]
    return make_dataclass("Execution", [(name, kind, _default(value)) for name, kind, value in fields], frozen=True)


def _default(value):
    from dataclasses import field
    return field(default=value)


def Execution(**values):
    """How a job runs (lth.runtime.job.StageJob.execution); omitted keys at their defaults."""
    return record_type()(**values)


def from_arguments(args) -> object:
    return Execution(**{_field(dotted): getattr(args, _field(dotted)) for dotted, _, _ in declared()})
