"""Training lengths written as "500it" (iterations) or "2ep" (epochs), or a bare integer, and
the one rule that makes epochs iterations (`epoch_steps`, `Step.iterations`). Torch-free."""
from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERN = re.compile(r"^(\d+)(it|ep)$")


def schema(minimum: int = 1) -> dict:
    """The JSON schema of a step in a declaration's config keys: iterations or "500it" / "2ep"."""
    return {"type": ["string", "integer"], "pattern": "^[0-9]{1,9}(it|ep)$", "minimum": minimum, "maximum": 999999999}


@dataclass(frozen=True)
class Step:
    count: int
    unit: str  # "it" or "ep"

    @classmethod
    def parse(cls, value: "str | int | Step") -> "Step":
        if isinstance(value, Step):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value, "it")
        match = _PATTERN.match(str(value).strip())
        if not match:
            raise ValueError(f"not a step: {value!r}; write an integer, or e.g. 500it or 2ep")
        return cls(int(match.group(1)), match.group(2))

    def iterations(self, steps_per_epoch: int) -> int:
        return self.count if self.unit == "it" else self.count * steps_per_epoch

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"


def epoch_steps(examples: int, batch: int) -> int:
    """Optimisation steps per epoch of `examples` training examples: the last partial batch
    is dropped. The config check (from the files' headers) and the training use this one."""
    return max(1, examples // batch)
