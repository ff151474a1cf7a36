"""GPU memory a training job needs, per model, estimated on the CPU: what `gpu_slots` can
pack onto one GPU. Figures, never assertions.

Per job (float32): the dataset as the loop keeps it on the device (train + validation +
test splits, lth.nn.training.prepare), the parameters, their gradients and the optimizer state
(Adam: two moments; SGD with momentum: one), and the activations of one training batch (the
outputs of every module in the forward pass, kept for backward; an upper-ish estimate that
ignores the allocator's rounding and cuDNN's workspace). Not counted: the CUDA context of
each process (typically 0.3-0.5 GB, by driver and GPU), which every slot pays once.
tools/gpu_check.py measures torch.cuda.max_memory_allocated on a real GPU.

    python bench/gpu_memory.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from lth.nn import models  # noqa: E402
from lth.plan import models as declared  # noqa: E402

# model -> (dataset, examples in train + validation + test, batch, optimizer states per weight)
CASES = {
    "lenet_300_100": ("(fashion-)mnist", 70_000, 60, 2),
    "conv2": ("cifar10", 60_000, 60, 2),
    "conv4": ("cifar10", 60_000, 60, 2),
    "conv6": ("cifar10", 60_000, 60, 2),
    "resnet20": ("cifar10", 60_000, 128, 1),
    "vgg16": ("cifar10", 60_000, 128, 1),
    "vgg19": ("cifar10", 60_000, 64, 1),
    "resnet18": ("cifar10", 60_000, 128, 1),
}


def activation_bytes(model, batch: int) -> int:
    total = [0]

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()
    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(torch.zeros((batch, *model.input_shape)))
    for hook in hooks:
        hook.remove()
    return total[0]


def main() -> None:
    print(f"{'model':15s} {'dataset':16s} {'batch':>5s} {'data':>8s} {'weights+grad+opt':>17s} "
          f"{'activations':>12s} {'total':>8s}  (GB, without the CUDA context)")
    for name, (dataset, examples, batch, states) in CASES.items():
        if name not in declared.names():
            continue
        model = models.build(name, seed=0)
        params = sum(p.numel() for p in model.parameters()) * 4
        data = examples * int(torch.tensor(model.input_shape).prod()) * 4
        weights = params * (2 + states)
        acts = activation_bytes(model, batch)
        total = data + weights + acts
        print(f"{name:15s} {dataset:16s} {batch:5d} {data / 1e9:8.3f} {weights / 1e9:17.3f} "
              f"{acts / 1e9:12.3f} {total / 1e9:8.3f}")


if __name__ == "__main__":
    main()
