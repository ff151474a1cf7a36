"""The training loop: whole splits in memory as tensors on the device, batches as index slices
of a seeded per-epoch permutation, masks enforced after every step.

Masking: the pruned weights are zeroed once at the start, and their gradients before every
optimizer step. Then a pruned weight's Adam/momentum state stays exactly zero, and with a
zero gradient, zero state and a zero weight (weight decay adds wd * 0) both optimizers'
updates are exactly zero: the weight stays 0 at every step without being masked again
(a second multiply per step cost ~47 us of a ~1.4 ms LeNet step; tests check the zeros).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from lth.nn import checkpoint, divergence, numerics, optim
from lth.runtime import lifeline
from lth.nn.data import Dataset, split_validation
from lth.plan.steps import Step, epoch_steps

EVAL_BATCH = 5000


@dataclass
class Split:
    x: torch.Tensor  # float32, normalised
    y: torch.Tensor  # int64

    def __len__(self) -> int:
        return len(self.y)


def prepare(dataset: Dataset, validation_size: int, split_seed: int, device: str = "cpu") -> dict:
    """train / validation / test splits as normalised float tensors on `device`. The mean
    and std come from the training split only (the test set is never used for any choice)."""
    train, val = split_validation(dataset.train, validation_size, split_seed)
    x_train = torch.from_numpy(train.x).to(device=device, dtype=torch.float32).div_(255.0)
    channels = (0,) + tuple(range(2, x_train.ndim)) if x_train.ndim == 4 else tuple(range(x_train.ndim))
    mean = x_train.mean(dim=channels, keepdim=True)[0]
    std = x_train.std(dim=channels, keepdim=True)[0]

    def tensor(arrays) -> Split:
        x = torch.from_numpy(arrays.x).to(device=device, dtype=torch.float32).div_(255.0)
        return Split(x.sub_(mean).div_(std), torch.from_numpy(arrays.y).to(device))

    return {"train": Split(x_train.sub_(mean).div_(std), torch.from_numpy(train.y).to(device)),
            "validation": tensor(val), "test": tensor(dataset.test)}


def derived_seed(seed: int, *keys: int) -> int:
    """Independent, reproducible seed per (seed, keys...): e.g. one per epoch, so resuming at
    any epoch needs no RNG state."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


AUGMENT_STREAM, DROPOUT_STREAM = 1, 2  # second keys: streams apart from the data order's
SCORE_STREAM, ADMM_STREAM = 3, 4  # the gradient criterion's batches (lth.nn.criteria), ADMM's data (lth.nn.admm)


def epoch_order(n: int, seed: int, epoch: int, device="cpu") -> torch.Tensor:
    generator = torch.Generator().manual_seed(derived_seed(seed, epoch))
    return torch.randperm(n, generator=generator).to(device)


PAD = 4  # random crops: zero padding by 4 pixels, then a crop of the original size


def augment_draws(seed: int, first: int, stop: int, n: int, pad: int = PAD) -> tuple:
    """Crop offsets (steps, 2, n) and flips (steps, n) of steps first..stop-1, each step from
    its own seeded generator (so any iteration can be resumed), drawn on the CPU in one go:
    the training loop moves a whole epoch's draws to the GPU with one non-blocking copy
    instead of two blocking copies per step."""
    offsets = torch.empty((stop - first, 2, n), dtype=torch.int64)
    flips = torch.empty((stop - first, n), dtype=torch.bool)
    for row, it in enumerate(range(first, stop)):
        generator = torch.Generator().manual_seed(derived_seed(seed, it, AUGMENT_STREAM))
        offsets[row] = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
        flips[row] = torch.rand(n, generator=generator) < 0.5
    return offsets, flips


def to_device(tensors: tuple, device) -> tuple:
    """Host tensors on `device`: pinned and copied without waiting when it is a GPU."""
    if device.type != "cuda":
        return tensors
    return tuple(t.pin_memory().to(device, non_blocking=True) for t in tensors)


def augment(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = PAD) -> torch.Tensor:
    """Random crop after zero padding by `pad`, and a random horizontal flip, for a whole
    batch of images (N, C, H, W) or (N, H, W) at once on its device: `offsets` (2, N) are
    the crops' top-left corners, `flips` (N,) which images are mirrored (augment_draws)."""
    if x.ndim == 3:
        return augment(x[:, None], offsets, flips, pad)[:, 0]
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]
    cropped = padded[torch.arange(n, device=x.device)[:, None, None, None],
                     torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
    return torch.where(flips[:, None, None, None], cropped.flip(3), cropped)


def learning_rate(settings: dict, iteration: int, steps_per_epoch: int) -> float:
    """The rate for step `iteration` (0-based): linear warmup over the first `warmup` steps,
    then multiplied by gamma at each milestone passed."""
    lr = float(settings["lr"])
    warmup = Step.parse(settings.get("warmup", 0)).iterations(steps_per_epoch)
    if iteration < warmup:
        lr = lr * (iteration + 1) / warmup
    for milestone in settings.get("milestones", []):
        if iteration >= Step.parse(milestone).iterations(steps_per_epoch):
            lr = lr * float(settings["gamma"])
    return lr


@torch.inference_mode()
def evaluate(model, split: Split, batch: int = EVAL_BATCH, precision: str = "fp32") -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over a whole split, in large batches, in the training's
    arithmetic (`precision`, lth.nn.numerics)."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=split.x.device)
    correct = torch.zeros((), dtype=torch.int64, device=split.x.device)
    for start in range(0, len(split), batch):
        with numerics.autocast(precision, split.x.device):
            logits = model(split.x[start:start + batch]).float()
        target = split.y[start:start + batch]
        loss += F.cross_entropy(logits, target, reduction="sum").double()
        correct += (logits.argmax(1) == target).sum()
    model.train(was_training)
    return loss.item() / len(split), correct.item() / len(split)


@dataclass
class Result:
    metrics: list = field(default_factory=list)   # rows: iteration, split, loss, accuracy
    iterations: int = 0
    train_seconds: float = 0.0                    # optimisation steps only
    eval_seconds: float = 0.0
    telemetry_seconds: float = 0.0                # lth.nn.telemetry's points, outside both
    snapshots: dict = field(default_factory=dict)  # iteration -> state dict copy


def restore_device_rng(state, device, seed: int, log) -> None:
    """A checkpoint resumes on any device: a GPU RNG state from a GPU run is restored; one
    a checkpoint cannot give (written on the CPU, where none is kept) is replaced by a
    generator seeded from the stage's seed and the iteration, and the log says so (dropout
    draws on the GPU then differ from an uninterrupted GPU run's)."""
    if isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.numel() > 0:
        torch.cuda.set_rng_state(state, device)
        return
    torch.cuda.manual_seed(seed)  # the current device: lth.nn.devices selects it
    log(f"checkpoint holds no GPU RNG state (written on the CPU): GPU generator reseeded with {seed}")


def apply_mask(model, mask: dict | None) -> list:
    """Zero the pruned weights; return [(parameter, float mask)] for the training loop."""
    if not mask:
        return []
    params = dict(model.named_parameters())
    pairs = []
    with torch.no_grad():
        for name, keep in mask.items():
            p = params[name]
            m = torch.as_tensor(keep, device=p.device).to(p.dtype)
            p.mul_(m)
            pairs.append((p, m))
    return pairs


def train(model, mask: dict | None, splits: dict, settings: dict, log=None, start: int = 0,
          capture: tuple = (), checkpointing: checkpoint.Checkpointing | None = None, stop=None,
          watch=None) -> Result:
    """Train `model` in place up to settings["iterations"] with the masked weights held at
    zero. `start` > 0 resumes the schedule and data order at that iteration (late
    resetting); `capture` lists iterations whose weights are copied into Result.snapshots.
    With `checkpointing`, a checkpoint is written every so many iterations and a valid one
    found at the start is resumed from (the results are the same bits as without). `stop`,
    called after every step, returns None or why to stop now: the loop then saves a
    checkpoint at that step and raises lifeline.Orphaned. `watch` (lth.nn.telemetry.Watch)
    records its telemetry points; its rows travel in the checkpoint."""
    log = log or (lambda line: None)
    train_split = splits["train"]
    batch = settings["batch_size"]
    steps_per_epoch = epoch_steps(len(train_split), batch)
    total = Step.parse(settings["iterations"]).iterations(steps_per_epoch)
    every = max(1, Step.parse(settings["eval_every"]).iterations(steps_per_epoch))
    device = train_split.x.device
    precision = settings.get("precision", "fp32")

    masked = apply_mask(model, mask)
    masked_params = [p for p, _ in masked]
    masks = [m for _, m in masked]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optim.make(params, settings)
    scheduled = bool(Step.parse(settings.get("warmup", 0)).count or settings.get("milestones"))
    if settings.get("dropout"):
        torch.manual_seed(derived_seed(settings["seed"], 0, DROPOUT_STREAM))  # dropout draws from the global RNG
    result = Result(iterations=total)

    def record(iteration, names=("validation", "test")):
        began = time.perf_counter()
        with torch.no_grad():
            finite = bool(torch.stack([torch.isfinite(p).all() for p in params]).all())
        if not finite and iteration == start and not result.metrics:
            raise divergence.Diverged(f"the start weights hold a value that is not finite (iteration {iteration}, "
                                      "before any step): the stage that made them is at fault (a perturbation's "
                                      "noise scale?), not the learning rate")
        if not finite:
            raise divergence.Diverged(f"diverged at iteration {iteration}: a weight is not finite; "
                                      + divergence._cause(settings))
        for name in names:
            loss, acc = evaluate(model, splits[name], precision=precision)
            divergence.check_loss(iteration, loss, settings, f"{name} loss")
            result.metrics.append({"iteration": iteration, "split": name, "loss": loss, "accuracy": acc})
        result.eval_seconds += time.perf_counter() - began

    def telemetry(iteration):
        if watch is not None and watch.due(iteration):
            began = time.perf_counter()
            watch.record(iteration)
            result.telemetry_seconds += time.perf_counter() - began

    def snapshot(iteration):
        if iteration in capture:
            result.snapshots[iteration] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def save_checkpoint(done):
        checkpoint.save(checkpointing, {
            "iteration": done, "model": model.state_dict(), "optimizer": optimizer.state(),
            "metrics": result.metrics, "rng": torch.get_rng_state(),
            "device_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0),
            "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
            **({"telemetry": watch.state()} if watch is not None else {}),
            **({"snapshots": result.snapshots} if capture else {})})

    saved = checkpoint.load(checkpointing, log) if checkpointing else None
    if saved is not None and watch is not None and not watch.restore(saved.get("telemetry")):
        log(f"warning: checkpoint at iteration {saved['iteration']} lacks this training's telemetry points; "
            "starting over")
        saved = None
    if saved is not None and capture and "snapshots" not in saved:
        log(f"warning: checkpoint at iteration {saved['iteration']} lacks this training's captured weights; "
            "starting over")
        saved = None
    first = start
    if saved is not None:
        with torch.no_grad():
            model.load_state_dict(saved["model"])
        optimizer.load(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        reseed = derived_seed(settings["seed"], saved["iteration"], DROPOUT_STREAM)
        if device.type == "cuda":
            restore_device_rng(saved["device_rng"], device, reseed, log)
        elif saved["device_rng"].numel() and settings.get("dropout"):  # written on a GPU, resumed here
            torch.manual_seed(reseed)  # the CPU generator the GPU run never advanced: dropout starts afresh
            log(f"checkpoint written on a GPU: CPU generator reseeded with {reseed} for dropout")
        result.metrics = saved["metrics"]
        result.snapshots = dict(saved.get("snapshots", {}))  # the points captured before the checkpoint
        result.train_seconds, result.eval_seconds = saved["train_seconds"], saved["eval_seconds"]
        first = saved["iteration"]
        log(f"resuming from checkpoint at iteration {first}")
    else:
        if watch is not None:
            watch.reset()
        snapshot(start)
        record(start)
        telemetry(start)
        log(f"it {start}/{total} val_loss={result.metrics[-2]['loss']:.4f} "
            f"test_acc={result.metrics[-1]['accuracy']:.4f}")
    model.train()
    x, y = train_split.x, train_split.y
    check_every = 1 if device.type == "cpu" else divergence.CHECK_EVERY_GPU  # .item() waits for a GPU
    started = time.perf_counter()
    for it in range(first, total):
        if it == first or it % steps_per_epoch == 0:  # this epoch's permutation, one batch per row
            order = epoch_order(len(train_split), settings["seed"], it // steps_per_epoch, device)
            batches = order[:steps_per_epoch * batch].view(steps_per_epoch, -1)
            if settings.get("augment"):  # the rest of this epoch's draws, moved in one copy
                drawn_from = it
                offsets, flips = to_device(augment_draws(
                    settings["seed"], it, min(total, (it // steps_per_epoch + 1) * steps_per_epoch), batch), device)
        index = batches[it % steps_per_epoch]
        # index_select: same rows as x[index], ~2x faster (advanced indexing takes a generic path)
        inputs = x.index_select(0, index)
        if settings.get("augment"):
            inputs = augment(inputs, offsets[it - drawn_from], flips[it - drawn_from])
        if scheduled:
            optimizer.lr = learning_rate(settings, it, steps_per_epoch)
        with numerics.autocast(precision, device):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float(), y.index_select(0, index))
        for p in params:  # backward then stores fresh gradients instead of accumulating
            p.grad = None
        loss.backward()
        if masked:
            torch._foreach_mul_([p.grad for p in masked_params], masks)
        if watch is not None and watch.pending == it:  # the gradient at the last telemetry point
            watch.gradient(it)
        optimizer.step()  # pruned weights stay exactly 0 (module docstring)
        done = it + 1
        if done % check_every == 0:
            divergence.check_loss(done, loss.item(), settings)
        snapshot(done)
        if watch is not None and watch.due(done):  # outside the step's clock
            result.train_seconds += time.perf_counter() - started
            telemetry(done)
            started = time.perf_counter()
        if done % every == 0 or done == total:
            result.train_seconds += time.perf_counter() - started
            record(done, ("validation", "test", "train") if done == total else ("validation", "test"))
            val, test = (r for r in result.metrics[-3 if done == total else -2:][:2])
            rate = (done - start) / result.train_seconds if result.train_seconds else 0.0
            log(f"it {done}/{total} ({100 * done // total}%) val_loss={val['loss']:.4f} "
                f"val_acc={val['accuracy']:.4f} test_acc={test['accuracy']:.4f} {rate:.0f} it/s")
            started = time.perf_counter()
        if checkpointing and done < total and checkpointing.due(done):
            result.train_seconds += time.perf_counter() - started
            save_checkpoint(done)
            started = time.perf_counter()
        reason = stop() if stop is not None and done < total else None
        if reason:
            result.train_seconds += time.perf_counter() - started
            if checkpointing:
                save_checkpoint(done)
            raise lifeline.Orphaned(f"{reason}: stopped at iteration {done}"
                                    + (", checkpoint saved" if checkpointing else "")
                                    + "; run snakemake --unlock, then snakemake --rerun-incomplete to resume")
    if total <= start:
        record(start, ("train",))
    divergence.check_final(result.metrics, start, settings)
    return result
