"""Pretraining on restricted information (Frankle, Schwab & Morcos, ICLR 2020, "The early
phase of neural network training", section 6): instead of rewinding IMP to theta_k of normal
training, the dense network is pretrained for some epochs on a restricted version of the
training split and IMP is rewound to that state. `restrict` builds that split.

Randomness: every draw is fixed per example (the same on every epoch: the paper's random
labels are one fixed relabelling, and a rotation task's angle is a property of the example),
so it is drawn once from a torch.Generator seeded with lth.nn.training.derived_seed(seed, key,
RESTRICTED_STREAM), on the CPU (identical bits on any device), then moved to the data's device.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from lth.nn.training import Split, derived_seed

# Third key of derived_seed: apart from the training's streams (1 augment, 2 dropout,
# 3 score batches, 4 ADMM) and the data order (seed, epoch), so a restricted pretraining's
# draws never coincide with the draws of the training that runs on its split.
RESTRICTED_STREAM = 6
LABELS_KEY, ROTATION_KEY = 0, 1  # second keys: the random labels' and the rotations' draws

TASK_DOCS = {
    "random_labels": "the true images, each with a label drawn uniformly from the classes, fixed per example",
    "rotation": "self-supervised: each image rotated by 90*n degrees counter-clockwise, n in {0,1,2,3} "
                "drawn per example, and the network predicts n (4 classes)",
    "blur": "the true labels, each image downsampled `factor` times by area averaging and upsampled "
            "back bilinearly (factor 4 in the paper)",
    "rotation_blur": "blurred as in blur, then rotated as in rotation; the labels are the rotations",
}
TASKS = tuple(TASK_DOCS)  # ("random_labels", "rotation", "blur", "rotation_blur"); TASK_DOCS describes each

# A rotation pretraining trains the first 4 logits of the task's 10-way head (cross-entropy
# over logits[:, :4]): the model is unchanged in shape, so its state dict is a valid start for
# IMP. The caller resets the output layer to theta_0's afterwards, i.e. swaps in a fresh task
# head, since the rotation head means nothing for the real labels.
HEAD_CLASSES = {"rotation": 4, "rotation_blur": 4}


def _generator(seed: int, key: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(seed, key, RESTRICTED_STREAM))


def random_labels(y: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """A label per example drawn uniformly from range(num_classes): the same for the same
    seed and length, whatever the epoch; same dtype and device as `y`."""
    labels = torch.randint(0, num_classes, (len(y),), generator=_generator(seed, LABELS_KEY))
    return labels.to(device=y.device, dtype=y.dtype)


def rotate(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """x[i] rotated by 90 * n[i] degrees counter-clockwise over the last two dims, for
    (N, H, W) or (N, C, H, W): one torch.rot90 per distinct n (4 at most) instead of one per
    image. Odd quarter turns of a non-square image would change its shape: ValueError."""
    if x.ndim not in (3, 4) or n.shape != (len(x),):
        raise ValueError(f"rotate: images (N, H, W) or (N, C, H, W) and n (N,) expected, "
                         f"got {tuple(x.shape)} and {tuple(n.shape)}")
    turns = n.to(x.device) % 4
    if x.shape[-1] != x.shape[-2] and bool((turns % 2 == 1).any()):
        raise ValueError(f"rotate: a {x.shape[-2]}x{x.shape[-1]} image cannot be turned by 90 degrees in place")
    out = torch.empty_like(x)
    for k in range(4):
        chosen = turns == k
        if bool(chosen.any()):
            out[chosen] = torch.rot90(x[chosen], k, dims=(-2, -1))
    return out


def rotation(x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x rotated, n): one quarter-turn count n in {0,1,2,3} per example, seeded and fixed per
    example; n (int64, on x's device) is the label to predict."""
    n = torch.randint(0, 4, (len(x),), generator=_generator(seed, ROTATION_KEY)).to(x.device)
    return rotate(x, n), n


def blur(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Each image downsampled `factor` times by area averaging (block means: avg_pool2d with
    kernel = stride = factor) and upsampled back to its size bilinearly (align_corners=False,
    the half-pixel convention: a constant image stays that constant). (N, H, W) or
    (N, C, H, W); float32 of the same shape."""
    if x.ndim not in (3, 4):
        raise ValueError(f"blur: images (N, H, W) or (N, C, H, W) expected, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"blur: image size {h}x{w} is not divisible by factor {factor}")
    images = x.float()[:, None] if x.ndim == 3 else x.float()
    small = F.avg_pool2d(images, kernel_size=factor, stride=factor)
    out = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return out[:, 0] if x.ndim == 3 else out


def restrict(split: Split, task: str, seed: int, num_classes: int, factor: int = 4) -> Split:
    """A new Split for `task` (TASKS; the input is not modified, and random_labels shares its
    x tensor, read only): random_labels keeps x with random labels; rotation rotates x and
    labels the rotations (4 classes, HEAD_CLASSES); blur blurs x and keeps the labels;
    rotation_blur blurs, then rotates, labelled by the rotations."""
    if task == "random_labels":
        return Split(split.x, random_labels(split.y, num_classes, seed))
    if task == "rotation":
        return Split(*rotation(split.x, seed))
    if task == "blur":
        return Split(blur(split.x, factor), split.y.clone())
    if task == "rotation_blur":
        return Split(*rotation(blur(split.x, factor), seed))
    raise ValueError(f"unknown restricted task {task!r}: expected one of {', '.join(TASKS)}")
