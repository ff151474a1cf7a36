"""What counts as a diverged training, an error rather than a result (torch-free).

A training has diverged when
- its minibatch loss is not finite (checked every step on the CPU; on a GPU every
  CHECK_EVERY_GPU steps and at every evaluation, since reading the loss waits for the GPU);
- a weight is not finite, or the validation loss is not (checked at every evaluation);
- at the end, its validation loss is above `train.divergence_factor` (the schema's default: 10) times the
  validation loss it started from: it ends far worse than its start weights.

The job then stops with one line naming the stage, the iteration, the loss and the likely
cause, and exits non-zero; its stage is never written, so nothing downstream uses it.
"""
from __future__ import annotations

import math

CHECK_EVERY_GPU = 100


class Diverged(RuntimeError):
    """A training diverged; the message is one line."""


def _cause(settings: dict) -> str:
    return (f"the learning rate ({float(settings['lr']):g} with {settings['optimizer']}) is likely too high; "
            "lower train.lr (or add train.warmup)")


def check_loss(iteration: int, loss: float, settings: dict, what: str = "loss") -> None:
    if not math.isfinite(loss):
        raise Diverged(f"diverged at iteration {iteration}: {what} {loss}; {_cause(settings)}")


def check_final(metrics: list, start: int, settings: dict) -> None:
    """The end of training against its start: validation losses at the first and last evaluation."""
    val = [m for m in metrics if m["split"] == "validation"]
    if not val or val[-1]["iteration"] <= start:
        return
    first, last = val[0]["loss"], val[-1]["loss"]
    # a job passes its execution setting (lth.plan.execution); a direct call of train() the schema's default
    factor = float(settings.get("divergence_factor", 10))
    if last > factor * first:
        raise Diverged(f"diverged: validation loss {last:.4g} at iteration {val[-1]['iteration']} is above "
                       f"{factor:g} x its start ({first:.4g} at iteration {val[0]['iteration']}, "
                       f"train.divergence_factor); {_cause(settings)}")
