"""Model registry. A model is an nn.Module that also says which tensors are prunable
(weights of conv and linear layers; never biases or BatchNorm) and which is the output layer.
Adding a model: one class here (or a module) and one REGISTRY entry."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class PrunableModel(nn.Module):
    output_layer: str = ""

    def prunable(self) -> list[str]:
        """Names of the prunable tensors, in parameter order."""
        return [name for name, module in self.named_modules()
                if isinstance(module, (nn.Linear, nn.Conv2d))
                for name in [f"{name}.weight"]]

    def init_weights(self, generator: torch.Generator) -> None:
        """Gaussian Glorot (Xavier normal) weights, zero biases, drawn from `generator`."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    fan_out, fan_in = module.weight.shape[0], module.weight[0].numel()
                    receptive = module.weight[0, 0].numel()
                    std = math.sqrt(2.0 / (fan_in + fan_out * receptive))
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                    if module.bias is not None:
                        module.bias.zero_()


class LeNet300100(PrunableModel):
    """LeNet-300-100: 784-300-100-10 fully connected, ReLU (Frankle & Carbin 2019)."""
    output_layer = "fc3.weight"

    def __init__(self, num_classes: int = 10, input_size: int = 784):
        super().__init__()
        self.fc1 = nn.Linear(input_size, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


REGISTRY = {
    "lenet_300_100": LeNet300100,
}


def describe(name: str, model: PrunableModel) -> dict:
    """What torch-free stages need to know about a model (written as the init's model.json)."""
    return {"name": name,
            "tensors": {k: list(v.shape) for k, v in model.state_dict().items()},
            "prunable": model.prunable(), "output_layer": model.output_layer}


def build(name: str, seed: int | None = None) -> PrunableModel:
    """A registered model; with a seed, freshly initialised from it (no global RNG)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(REGISTRY)}")
    model = REGISTRY[name]()
    if seed is not None:
        model.init_weights(torch.Generator().manual_seed(seed))
    return model
