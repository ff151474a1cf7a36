"""Canonical values: one spelling per setting, so one experiment has one stage ID.

Numbers compare by value (1 = 1.0, 0.0012 = 1.2e-3), steps by what they mean
("10000", 10000, "10000it" and "010000it" are all "10000it"; zero in any unit is "0it", and
a key whose schema names a word for step zero, `x-zero`, spells it so: rewind.to 0it, 0ep and
reset all start a level from theta_0 at iteration 0, so all three are "reset"), and lists whose order means
nothing (seeds, levels, fractions, the list-valued keys that expand into lotteries) are
sorted. The config is canonicalised once, right after schema validation (lth.plan.config), so
stage IDs, spec.json files and the plan see canonical values only. Torch-free and pure.
"""
from __future__ import annotations

import hashlib
import json
import math

from lth.plan.steps import Step

# The largest integer a float holds exactly: integral floats up to it are written as ints.
_EXACT = 2 ** 53


def number(value):
    """An int for an integral value (1.0 -> 1), else the float itself (its repr is the
    shortest that round-trips, so 0.0012 and 1.2e-3 print alike). Bools stay bools."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) <= _EXACT:
        return int(value)
    return value


def step(value) -> str:
    """The one spelling of a training length: "<count><unit>" without leading zeros, and
    "0it" for zero in any unit."""
    parsed = Step.parse(value)
    return "0it" if parsed.count == 0 else str(parsed)


def _sort_key(value):
    """Natural order for set-like lists: words, then steps by unit and count, then numbers."""
    if isinstance(value, bool):
        return (3, int(value), "")
    if isinstance(value, (int, float)):
        return (2, value, "")
    if isinstance(value, str):
        try:
            parsed = Step.parse(value)
            return (1, parsed.count, parsed.unit)
        except ValueError:
            return (0, 0, value)
    return (4, 0, json.dumps(value, sort_keys=True))


def as_set(values: list) -> list:
    """A list whose order means nothing, in its canonical order."""
    return sorted(values, key=_sort_key)


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def digest(obj, length: int | None = None) -> str:
    text = hashlib.sha256(canonical_json(obj).encode()).hexdigest()
    return text[:length] if length else text
