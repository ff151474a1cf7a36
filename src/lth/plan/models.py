"""Model declarations: each model is one `Model` (name, factory, input shape, output layer,
smallest prunable tensors per pruning rate), registered here or by a plugin
(lth.plan.plugins). Torch-free: the config check and the schema's `model.name` enum
(lth.plan.config.load_schema) come from these at parse time; the factory (a
"module:callable" returning an lth.nn.models.PrunableModel) is imported only when a job
builds the model, and lth.nn.models.build checks the built network against its declaration
(input shape, output layer, smallest layers), so a declaration cannot silently disagree
with its class.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lth.plan import plugins


@dataclass(frozen=True)
class Model:
    name: str
    factory: str                   # "module:callable"; called with num_classes, width, dropout
    input_shape: tuple             # (channels, height, width) of one example
    output_layer: str              # the prunable tensor that is the classifier (its own pruning rate)
    # The smallest prunable tensor per pruning rate, (tensor, weights): "conv" (prune.conv_rate),
    # "hidden" (other hidden layers: prune.rate) and "output" (prune.output_rate). The first a
    # layerwise schedule would empty, refused before any job. None: no check before the jobs
    # (the prune stage still refuses an emptied layer).
    smallest: dict | None = None  # or a function of the model's settings (below)
    options: dict = field(default_factory=dict)  # fixed keyword arguments of the factory
    description: str = ""
    # its config keys, model.<key>: {key: JSON schema with a default}, passed to the factory
    # and hashed into the init's ID only off their defaults; `smallest` may then be a
    # function of them (settings -> the dict above), for the emptied-layer check
    settings: dict = field(default_factory=dict)

    def smallest_for(self, settings: dict) -> dict | None:
        return self.smallest(settings) if callable(self.smallest) else self.smallest


def settings(cfg: dict) -> dict:
    """The model's own settings from a validated config, only those off their defaults (so
    the IDs and model.json of a model at its defaults stay what they were)."""
    own = get(cfg["model"]["name"]).settings
    return {k: cfg["model"][k] for k, schema in own.items() if cfg["model"][k] != schema["default"]}


_MODELS = plugins.Registry("model")
register, get, names = _MODELS.register, _MODELS.get, _MODELS.names


_CIFAR = (3, 32, 32)
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
_CONVNET = {"conv": ("convs.0.weight", 1728), "hidden": ("fc2.weight", 65536), "output": ("fc3.weight", 2560)}
_VGG = {"conv": ("features.0.weight", 1728), "output": ("fc.weight", 5120)}

_RESIDUAL = {"residual": {"x-unordered": True, "default": True,
                          "anyOf": [{"type": "boolean"},
                                    {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "boolean"}}],
                          "description": "true or false: the CIFAR ResNets' skip connections; false removes every one, "
                                         "projection shortcuts included (Ma et al. 2021 Fig. 5's network without "
                                         "residual connections: 2,752 fewer parameters in resnet20, 10,624 in "
                                         "resnet32); or [true, false]: one lottery each"}}
_WIDTHS = {"widths": {"type": "array", "minItems": 2, "maxItems": 2, "default": [300, 100],
                      "items": {"type": "integer", "minimum": 1, "maximum": 100000},
                      "description": "two integers in [1, 100000]: LeNet-300-100's hidden layer widths "
                                     "(LTH'19 appendix's layer-width sweeps)"}}


def _lenet_smallest(settings: dict) -> dict:
    """The smallest hidden and output tensors of LeNet at its widths (ties: the first)."""
    first, second = settings.get("widths", [300, 100])
    hidden = min((("fc1.weight", 784 * first), ("fc2.weight", first * second)), key=lambda t: t[1])
    return {"hidden": hidden, "output": ("fc3.weight", second * 10)}


for _model in (
    Model("lenet_300_100", "lth.nn.models:LeNet300100", (1, 28, 28), "fc3.weight", _lenet_smallest,
          description="LeNet-300-100: 784-300-100-10 fully connected (Frankle & Carbin 2019)", settings=_WIDTHS),
    Model("conv2", "lth.nn.models:ConvNet", _CIFAR, "fc3.weight", _CONVNET, {"plan": (64, 64)},
          "Conv-2 of Frankle & Carbin 2019"),
    Model("conv4", "lth.nn.models:ConvNet", _CIFAR, "fc3.weight", _CONVNET, {"plan": (64, 64, 128, 128)},
          "Conv-4 of Frankle & Carbin 2019"),
    Model("conv6", "lth.nn.models:ConvNet", _CIFAR, "fc3.weight", _CONVNET,
          {"plan": (64, 64, 128, 128, 256, 256)}, "Conv-6 of Frankle & Carbin 2019"),
    Model("vgg16", "lth.nn.models:VGG", _CIFAR, "fc.weight", _VGG, {"plan": _VGG16}, "VGG-16 with BatchNorm"),
    Model("vgg19", "lth.nn.models:VGG", _CIFAR, "fc.weight", _VGG, {"plan": _VGG19}, "VGG-19 with BatchNorm"),
    Model("resnet20", "lth.nn.models:ResNet", _CIFAR, "fc.weight",
          {"conv": ("conv.weight", 432), "output": ("fc.weight", 640)},
          {"stages": ((16, 3), (32, 3), (64, 3))}, "CIFAR ResNet-20 (16-32-64 channels)", _RESIDUAL),
    Model("resnet32", "lth.nn.models:ResNet", _CIFAR, "fc.weight",
          {"conv": ("conv.weight", 864), "output": ("fc.weight", 1280)},
          {"stages": ((32, 5), (64, 5), (128, 5))},
          "CIFAR ResNet-32 at double width (5 blocks per stage, 32-64-128 channels): Ma et al. 2021's, "
          "1.86M parameters (the standard 16-32-64 ResNet-32 has 0.46M)", _RESIDUAL),
    Model("resnet18", "lth.nn.models:ResNet", _CIFAR, "fc.weight",
          {"conv": ("conv.weight", 1728), "output": ("fc.weight", 5120)},
          {"stages": ((64, 2), (128, 2), (256, 2), (512, 2))}, "CIFAR ResNet-18 (64-128-256-512 channels)",
          _RESIDUAL),
    Model("mobilenet_v1", "lth.nn.models:MobileNetV1", _CIFAR, "fc.weight",
          {"conv": ("blocks.0.depthwise.weight", 288), "output": ("fc.weight", 10240)},
          description="MobileNet-v1 for CIFAR (3x3 stride-1 stem, 13 depthwise separable blocks; "
                      "depthwise convs prunable), 3.2M parameters"),
):
    register(_model)
