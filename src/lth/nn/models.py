"""The networks. A model is an nn.Module that also says which tensors are prunable
(weights of conv and linear layers; never biases or BatchNorm) and which is the output layer.
Adding a model: its class (here or in any module) and one declaration in lth.plan.models
(or a plugin's) naming it as the factory; `build` checks the two agree.

Every model takes `width` (a multiplier on its hidden widths, for the small-dense baseline
of the sanity checks), `num_classes` and `dropout` (on the fully connected hidden layers).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class PrunableModel(nn.Module):
    output_layer: str = ""

    def prunable(self) -> list[str]:
        """Names of the prunable tensors, in parameter order."""
        return [f"{name}.weight" for name, module in self.named_modules()
                if isinstance(module, (nn.Linear, nn.Conv2d))]

    def init_weights(self, generator: torch.Generator) -> None:
        """Gaussian Glorot (Xavier normal) weights, zero biases, BatchNorm at (1, 0), drawn
        from `generator` in module order."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    fan_in = module.weight[0].numel()
                    fan_out = module.weight.shape[0] * module.weight[0, 0].numel()
                    std = math.sqrt(2.0 / (fan_in + fan_out))
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                    if module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, nn.BatchNorm2d):
                    module.reset_parameters()


def _w(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class LeNet300100(PrunableModel):
    """LeNet-300-100: 784-300-100-10 fully connected, ReLU (Frankle & Carbin 2019)."""
    output_layer = "fc3.weight"
    input_shape = (1, 28, 28)

    def __init__(self, num_classes: int = 10, width: float = 1.0, dropout: float = 0.0, in_features: int = 784,
                 widths: tuple = (300, 100)):
        super().__init__()
        first, second = (_w(w, width) for w in widths)  # model.widths, narrowed for a small dense baseline
        self.fc1 = nn.Linear(in_features, first)
        self.fc2 = nn.Linear(first, second)
        self.fc3 = nn.Linear(second, num_classes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(F.dropout(x, self.dropout, self.training)))
        return self.fc3(F.dropout(x, self.dropout, self.training))


class ConvNet(PrunableModel):
    """Conv-2/4/6 of Frankle & Carbin 2019: pairs of 3x3 same-padded convs, each pair
    followed by 2x2 max pooling, then fully connected 256-256-classes, ReLU."""
    output_layer = "fc3.weight"
    input_shape = (3, 32, 32)

    def __init__(self, plan: list[int], num_classes: int = 10, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        layers, channels = [], 3
        for i, out in enumerate(plan):
            layers.append(nn.Conv2d(channels, _w(out, width), 3, padding=1))
            channels = _w(out, width)
        self.convs = nn.ModuleList(layers)
        side = 32 // 2 ** (len(plan) // 2)
        self.fc1 = nn.Linear(channels * side * side, _w(256, width))
        self.fc2 = nn.Linear(_w(256, width), _w(256, width))
        self.fc3 = nn.Linear(_w(256, width), num_classes)
        self.dropout = dropout

    def forward(self, x):
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i % 2 == 1:
                x = F.max_pool2d(x, 2)
        x = F.relu(self.fc1(F.dropout(x.flatten(1), self.dropout, self.training)))
        x = F.relu(self.fc2(F.dropout(x, self.dropout, self.training)))
        return self.fc3(F.dropout(x, self.dropout, self.training))


class VGG(PrunableModel):
    """CIFAR VGG with BatchNorm (as in Frankle et al. 2019/2020): 3x3 conv-BN-ReLU blocks,
    'M' = 2x2 max pooling, then 2x2 average pooling and one linear output layer."""
    output_layer = "fc.weight"
    input_shape = (3, 32, 32)

    def __init__(self, plan: list, num_classes: int = 10, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        layers, channels = [], 3
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, _w(item, width), 3, padding=1, bias=False),
                           nn.BatchNorm2d(_w(item, width)), nn.ReLU()]
                channels = _w(item, width)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)
        self.dropout = dropout

    def forward(self, x):
        x = F.avg_pool2d(self.features(x), 2).flatten(1)
        return self.fc(F.dropout(x, self.dropout, self.training))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the shortcut (identity, or a 1x1 conv + BN projection where
    the shape changes), then ReLU. residual=False: the same two convs with no shortcut at all
    (no projection either), a plain conv-BN-ReLU pair."""

    def __init__(self, cin: int, cout: int, stride: int, residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None  # residual=False: no module, so no parameters, state_dict keys or draws
        if residual:
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:  # projection shortcut: 1x1 conv + BN
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out if self.shortcut is None else out + self.shortcut(x))


class ResNet(PrunableModel):
    """CIFAR ResNets: a 3x3 stem (no max pooling), stages of basic blocks, global average
    pooling, one linear output layer. ResNet-20: 3 stages x 3 blocks, 16-32-64 channels;
    ResNet-32: 3 stages x 5 blocks (declared at 32-64-128, Ma et al. 2021's); ResNet-18:
    4 stages x 2 blocks, 64-128-256-512. residual=False removes every skip connection,
    projection shortcuts included (Ma et al. 2021 Fig. 5's network without residual
    connections); at the default True the modules, their order, names and draws are as
    before the keyword existed (theta_0 keeps its bits)."""
    output_layer = "fc.weight"
    input_shape = (3, 32, 32)

    def __init__(self, stages: list[tuple[int, int]], num_classes: int = 10, width: float = 1.0,
                 dropout: float = 0.0, residual: bool = True):
        super().__init__()
        channels = _w(stages[0][0], width)
        self.conv = nn.Conv2d(3, channels, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        blocks = []
        for i, (out, count) in enumerate(stages):
            for j in range(count):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(channels, _w(out, width), stride, residual))
                channels = _w(out, width)
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, num_classes)
        self.dropout = dropout

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(F.dropout(x, self.dropout, self.training))


class SeparableBlock(nn.Module):
    """MobileNet's depthwise separable convolution: a 3x3 depthwise conv (one filter per
    channel, groups = channels) and a 1x1 pointwise conv, each followed by BN and ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn2(self.pointwise(F.relu(self.bn1(self.depthwise(x))))))


# MobileNet-v1's 13 separable blocks, (output channels, stride) (Howard et al. 2017, Table 1)
MOBILENET_V1 = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                (512, 1), (512, 1), (1024, 2), (1024, 1))


class MobileNetV1(PrunableModel):
    """MobileNet-v1 (Howard et al. 2017) for CIFAR, as in Ma et al. 2021: a 3x3 stride-1
    stem of 32 channels (ImageNet's has stride 2) with BN and ReLU, the 13 depthwise
    separable blocks (four of stride 2: 32x32 down to 2x2), global average pooling, one
    linear output layer; 3.2M parameters with a 10-class head.

    Prunable: every conv weight, depthwise ones included, and the fc weight, as for the
    ResNets and VGGs (PrunableModel.prunable: every Conv2d and Linear weight, the ResNets'
    stem and projection shortcuts included). The depthwise filters are convolution weights
    like any other; keeping them dense would be a special case for 1.4% of the weights
    (44,640 of 3.2M) that no other model has. Their layerwise rate is the convs'
    (prune.conv_rate); with 9 weights per channel a high rate can cut channels off, which is
    what pruning them means.

    The init is PrunableModel's Glorot with torch's fans, which ignore groups (as
    torch.nn.init.xavier_normal_ does): a depthwise filter's std is sqrt(2 / (9 + 9 C)),
    small for wide layers; the BN after each conv rescales its output."""
    output_layer = "fc.weight"
    input_shape = (3, 32, 32)

    def __init__(self, blocks: tuple = MOBILENET_V1, num_classes: int = 10, width: float = 1.0,
                 dropout: float = 0.0):
        super().__init__()
        channels = _w(32, width)
        self.conv = nn.Conv2d(3, channels, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        layers = []
        for out, stride in blocks:
            layers.append(SeparableBlock(channels, _w(out, width), stride))
            channels = _w(out, width)
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)
        self.dropout = dropout

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(F.dropout(x, self.dropout, self.training))


def describe(name: str, model: PrunableModel, **extra) -> dict:
    """What torch-free stages need to know about a model (written as the init's model.json)."""
    return {"name": name,
            "tensors": {k: list(v.shape) for k, v in model.state_dict().items()},
            "prunable": model.prunable(), "output_layer": model.output_layer, **extra}


def build(name: str, seed: int | None = None, std_scale: float = 1.0, **options) -> PrunableModel:
    """A declared model (lth.plan.models); with a seed, freshly initialised from it (no
    global RNG), its prunable weights' standard deviation times `std_scale` (init.std_scale,
    LTH'19 appendix's initialisation sweeps). The first build of each model in a process
    checks it against its declaration."""
    from lth.plan import models as declared, plugins
    try:
        spec = declared.get(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    model = plugins.resolve(spec.factory)(**spec.options, **options)
    at_defaults = set(options) <= {"width", "num_classes", "dropout"}  # no model settings (model.<key>)
    if name not in _checked and at_defaults and options.get("width", 1.0) == 1.0 and options.get("num_classes", 10) == 10:
        problem = disagreement(spec, model)
        if problem:
            raise ValueError(f"model {name}: its declaration (lth.plan.models) says {problem}; fix the declaration")
        _checked.add(name)
    if seed is not None:
        model.init_weights(torch.Generator().manual_seed(seed))
        if std_scale != 1.0:  # at 1 the draw is untouched: theta_0 keeps its bits
            with torch.no_grad():
                for weight in (model.get_parameter(n) for n in model.prunable()):
                    weight.mul_(std_scale)
    return model


_checked: set = set()


def from_info(info: dict, seed: int | None = None, std_scale: float = 1.0, **options) -> PrunableModel:
    """The model a stage's model.json describes: its name, the model settings it was built
    with (model.<key>, recorded only off their defaults), its number of classes and width."""
    classes = info["tensors"][info["output_layer"]][0]
    return build(info["name"], seed, std_scale, **info.get("settings", {}), num_classes=classes,
                 **{"width": info.get("width", 1.0), **options})


def smallest_layers(model: PrunableModel) -> dict:
    """The smallest prunable tensor per pruning rate, {role: (name, weights)}: "output" (the
    output layer), "conv" (4-d tensors), "hidden" (the rest); ties go to the first."""
    out: dict = {}
    for name in model.prunable():
        tensor = model.get_parameter(name)
        role = "output" if name == model.output_layer else "conv" if tensor.dim() == 4 else "hidden"
        if role not in out or tensor.numel() < out[role][1]:
            out[role] = (name, tensor.numel())
    return out


def disagreement(spec, model: PrunableModel) -> str | None:
    """How a built model (full width, 10 classes) differs from its declaration, or None."""
    if model.output_layer != spec.output_layer:
        return f"output layer {spec.output_layer}, the model has {model.output_layer}"
    if tuple(model.input_shape) != tuple(spec.input_shape):
        return f"input {spec.input_shape}, the model takes {tuple(model.input_shape)}"
    smallest = spec.smallest_for({})  # at the model's default settings
    if smallest is not None:
        found = smallest_layers(model)
        if {k: tuple(v) for k, v in smallest.items()} != found:
            return f"smallest layers {smallest}, the model's are {found}"
    return None


def prunable_count(model: PrunableModel) -> int:
    return sum(model.get_parameter(n).numel() for n in model.prunable())


def small_dense_width(info: dict, target: int) -> float:
    """The width multiplier whose dense model has about `target` prunable weights: the
    sanity checks' small dense baseline at a ticket's parameter count (bisection; the count
    grows monotonically with width)."""
    low, high = 1e-3, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        if prunable_count(from_info(info, width=mid)) < target:
            low = mid
        else:
            high = mid
    return high
