"""Telemetry of a training (Frankle, Schwab & Morcos, ICLR 2020, Fig. 3): what the weights do
during the early phase, recorded at chosen iterations without changing the training.

At every telemetry point, per prunable layer and over all of them ("all"), on the surviving
weights only (a masked training's pruned weights are 0 throughout):
- mean_abs: mean |w|;
- sign_changed_init / sign_changed_start: fraction whose sign differs from theta_0 (the
  network's initialisation) / from the training's start (theta_k when rewound);
- l2_init, cos_init, l2_start, cos_start: L2 distance and cosine similarity to those;
- grad_norm: L2 norm of the minibatch gradient at these weights: the gradient the next step
  computes anyway (its batch, train mode, pruned entries zeroed), read before the optimizer
  uses it, so it costs nothing and touches no random stream; the end of training has no next
  step, so its grad_norm is NaN;
- test_loss, test_accuracy ("all" only): on the first `examples` examples of the test split
  (eval mode);
- weight (with `index`): the values of `weights` surviving weights drawn with the telemetry
  seed (uniformly over all surviving weights; `index` is the flat index in its tensor).
After training, l2_final and cos_final of every point to the final weights: each point's
surviving weights are appended (float32) to a scratch file beside the checkpoint, read back
once at the end, then deleted (survivors x 4 bytes per point: LeNet-300-100 dense 1.06 MB).

The rows are kept in the checkpoint and the scratch file is cut back to the checkpoint's
points on resume, so a resumed training writes the same table bit for bit.

Cost (bench/speed.py --section telemetry): a point's evaluation of `examples` test examples
is most of it (LeNet-300-100, 500 examples: about 9 ms, the time of ~5 steps), hence the
defaults: every 1000it after an early phase of every 50it up to 1000it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from lth.nn.training import Split, evaluate
from lth.plan.steps import Step

COLUMNS = ("iteration", "layer", "quantity", "index", "value")
ALL = "all"


def points(settings: dict, start: int, total: int, steps_per_epoch: int) -> list[int]:
    """The telemetry iterations of a training from `start` to `total`: the start, every
    `early_every` before `early_until`, every `every`, and the end."""
    def its(value):
        return Step.parse(value).iterations(steps_per_epoch)
    chosen = {start, total}
    every = its(settings["every"])
    chosen.update(range(every * (start // every + 1), total, every))
    early_every, until = its(settings["early_every"]), its(settings["early_until"])
    if early_every and until:
        chosen.update(range(early_every * (start // early_every + 1), min(until, total), early_every))
    return sorted(chosen)


class Watch:
    """The telemetry of one training: call `record(iteration)` at each point (`due`), keep
    `state()` in checkpoints, `restore` it on resume, and `finish()` at the end."""

    def __init__(self, model, layers: list, mask: dict | None, origin: dict, start: dict, settings: dict,
                 splits: dict, point_list: list, scratch: Path | None, precision: str = "fp32"):
        self.model, self.layers, self.precision = model, list(layers), precision
        self.points = set(point_list)
        params = dict(model.named_parameters())
        self.params = [params[name] for name in self.layers]
        device = self.params[0].device
        # flat indices of the survivors per layer (None: every weight survives)
        self.kept = [None if not mask else torch.from_numpy(np.flatnonzero(mask[name])).to(device)
                     for name in self.layers]
        self.origin = [self._survivors(torch.as_tensor(origin[n]).to(device), i) for i, n in enumerate(self.layers)]
        self.start = [self._survivors(torch.as_tensor(start[n]).to(device), i) for i, n in enumerate(self.layers)]
        self.sizes = [int(v.numel()) for v in self.start]
        self.signs = [(torch.sign(o), torch.sign(w)) for o, w in zip(self.origin, self.start)]  # constants
        self.tracked = self._draw(int(settings["weights"]), int(settings["seed"]))
        n = int(settings["examples"])
        self.test = Split(splits["test"].x[:n], splits["test"].y[:n])
        self.rows: list = []
        self.count = 0  # points whose survivors are in the scratch file
        self.pending = None  # the point whose gradient the next step brings
        self.scratch = Path(scratch) if scratch is not None else Path(tempfile.mkstemp(suffix=".telemetry")[1])

    def _survivors(self, tensor: torch.Tensor, i: int) -> torch.Tensor:
        flat = tensor.detach().reshape(-1)
        return (flat if self.kept[i] is None else flat.index_select(0, self.kept[i])).double()

    def _draw(self, count: int, seed: int) -> list:
        """(layer position, position among its survivors, flat index) of `count` survivors."""
        total = sum(self.sizes)
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(count, total), replace=False))
        edges = np.cumsum([0] + self.sizes)
        out = []
        for g in chosen:
            i = int(np.searchsorted(edges, g, side="right") - 1)
            j = int(g - edges[i])
            flat = j if self.kept[i] is None else int(self.kept[i][j])
            out.append((i, j, flat))
        return out

    def due(self, iteration: int) -> bool:
        return iteration in self.points

    def _row(self, iteration, layer, quantity, value, index=-1):
        self.rows.append((iteration, layer, quantity, index, float(value)))

    @torch.no_grad()
    def gradient(self, iteration: int) -> None:
        """After the backward pass of the step taken from point `iteration`: its gradient norm."""
        squares = [float(self._survivors(p.grad, i).square().sum()) for i, p in enumerate(self.params)]
        for name, square in zip(self.layers, squares):
            self._row(iteration, name, "grad_norm", np.sqrt(square))
        self._row(iteration, ALL, "grad_norm", np.sqrt(sum(squares)))
        self.pending = None

    def record(self, iteration: int) -> None:
        loss, accuracy = evaluate(self.model, self.test, precision=self.precision)
        self._row(iteration, ALL, "test_loss", loss)
        self._row(iteration, ALL, "test_accuracy", accuracy)
        current = [self._survivors(p, i) for i, p in enumerate(self.params)]
        sums = np.zeros(10)  # sums over layers give the overall figures
        for name, w, w0, ws, (sign0, sign_start) in zip(self.layers, current, self.origin, self.start, self.signs):
            sign = torch.sign(w)
            parts = torch.stack([w.abs().sum(), (sign != sign0).sum().double(),
                                 (sign != sign_start).sum().double(), (w - w0).square().sum(),
                                 (w - ws).square().sum(), w @ w, w0 @ w0, ws @ ws,
                                 w @ w0, w @ ws]).cpu().numpy()
            self._layer_rows(iteration, name, parts, w.numel())
            sums += parts
        self._layer_rows(iteration, ALL, sums, sum(self.sizes))
        for i, j, flat in self.tracked:
            self._row(iteration, self.layers[i], "weight", current[i][j].item(), flat)
        with open(self.scratch, "ab") as handle:
            handle.write(torch.cat(current).float().cpu().numpy().tobytes())
        self.count += 1
        self.pending = iteration

    def _layer_rows(self, iteration, layer, parts, n) -> None:
        abs_sum, flips0, flips_start, d0, ds, ww, w0w0, wsws, *dots = parts
        self._row(iteration, layer, "mean_abs", abs_sum / n)
        self._row(iteration, layer, "sign_changed_init", flips0 / n)
        self._row(iteration, layer, "sign_changed_start", flips_start / n)
        self._row(iteration, layer, "l2_init", np.sqrt(d0))
        self._row(iteration, layer, "cos_init", cosine(dots[0], ww, w0w0))
        self._row(iteration, layer, "l2_start", np.sqrt(ds))
        self._row(iteration, layer, "cos_start", cosine(dots[1], ww, wsws))

    def reset(self) -> None:
        """A training from its start: no point kept yet (a killed run's scratch file is cut)."""
        self.scratch.parent.mkdir(parents=True, exist_ok=True)
        self.scratch.write_bytes(b"")
        self.rows, self.count, self.pending = [], 0, None

    def state(self) -> dict:
        """What a checkpoint keeps (the scratch file is flushed first)."""
        with open(self.scratch, "ab") as handle:
            os.fsync(handle.fileno())
        return {"rows": list(self.rows), "count": self.count, "pending": self.pending}

    def restore(self, state) -> bool:
        """Resume from a checkpoint's state; False when the scratch file lacks its points
        (then the checkpoint cannot be resumed with telemetry: start over)."""
        if not isinstance(state, dict):
            return False
        size = state["count"] * sum(self.sizes) * 4
        if not self.scratch.exists() or self.scratch.stat().st_size < size:
            return False
        os.truncate(self.scratch, size)
        self.rows, self.count, self.pending = list(state["rows"]), int(state["count"]), state["pending"]
        return True

    def finish(self) -> dict:
        """The table's columns, the final distances added; the scratch file is removed."""
        final = [self._survivors(p, i) for i, p in enumerate(self.params)]
        final_all = torch.cat(final)
        edges = np.cumsum([0] + self.sizes)
        recorded = sorted({r[0] for r in self.rows})
        width = sum(self.sizes)
        vectors = np.memmap(self.scratch, dtype=np.float32, mode="r", shape=(self.count, width)) \
            if self.count else np.zeros((0, width), np.float32)
        for iteration, vector in zip(recorded, vectors):
            w = torch.from_numpy(np.array(vector, dtype=np.float64)).to(final_all.device)
            for i, name in enumerate(self.layers):
                self._final_rows(iteration, name, w[edges[i]:edges[i + 1]], final[i])
            self._final_rows(iteration, ALL, w, final_all)
        del vectors
        if self.pending is not None:  # the last point: no step follows it
            for layer in self.layers + [ALL]:
                self._row(self.pending, layer, "grad_norm", float("nan"))
        self.scratch.unlink(missing_ok=True)
        rows = sorted(self.rows, key=lambda r: (r[0], r[1] != ALL, r[1], r[2], r[3]))
        return {column: [r[k] for r in rows] for k, column in enumerate(COLUMNS)}

    def _final_rows(self, iteration, layer, w, final) -> None:
        self._row(iteration, layer, "l2_final", (w - final).norm().item())
        self._row(iteration, layer, "cos_final", cosine((w @ final).item(), (w @ w).item(), (final @ final).item()))

    def discard(self) -> None:
        self.scratch.unlink(missing_ok=True)


def cosine(dot: float, aa: float, bb: float) -> float:
    """Cosine similarity from a dot product and the squared norms (nan when one is zero)."""
    denominator = np.sqrt(aa) * np.sqrt(bb)
    return float(dot / denominator) if denominator > 0 else float("nan")


def write(path, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lth.store.artifacts import atomic_path
    table = pa.table({"iteration": pa.array(columns["iteration"], type=pa.int64()),
                      "layer": pa.array(columns["layer"], type=pa.string()),
                      "quantity": pa.array(columns["quantity"], type=pa.string()),
                      "index": pa.array(columns["index"], type=pa.int64()),
                      "value": pa.array(columns["value"], type=pa.float64())})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
