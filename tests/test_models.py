import pytest
import torch
from torch import nn

from lth.nn import models

from lth.plan import models as declared
# Prunable weights (conv + linear). LeNet, Conv-2 and Conv-4 match the LTH paper's 266K,
# 4.3M, 2.4M; the rest pin this implementation (the papers count BN and biases differently).
EXPECTED_WEIGHTS = {
    "lenet_300_100": 266_200, "conv2": 4_300_992, "conv4": 2_425_024, "conv6": 2_261_184,
    "resnet20": 270_896, "vgg16": 14_715_584, "resnet18": 11_164_352,
}
PINNED_FC1_SUM = -37.9796


@pytest.mark.parametrize("name", declared.names())
def test_forward_backward_and_prunable_tensors(name):
    model = models.build(name, seed=0, width=0.25 if name in ("vgg16", "vgg19", "resnet18") else 1.0)
    x = torch.randn(4, *declared.get(name).input_shape)
    out = model(x)
    assert out.shape == (4, 10)
    out.sum().backward()
    prunable = model.prunable()
    params = dict(model.named_parameters())
    assert all(params[n].grad is not None for n in prunable)
    assert prunable[-1] == model.output_layer
    for module_name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert f"{module_name}.weight" not in prunable
    assert not any(n.endswith(".bias") for n in prunable)


@pytest.mark.parametrize("name, count", EXPECTED_WEIGHTS.items())
def test_prunable_weight_counts(name, count):
    assert models.prunable_count(models.build(name)) == count


def test_lenet_theta0_is_pinned():
    """theta_0 of seed 0 must never change: stage IDs promise the same weights."""
    w = models.build("lenet_300_100", seed=0).state_dict()["fc1.weight"]
    assert w.shape == (300, 784)
    assert round(float(w.double().sum()), 4) == pytest.approx(PINNED_FC1_SUM, abs=1e-4)


def test_small_dense_width_matches_a_parameter_count():
    target = int(0.2 * 266_200)
    width = models.small_dense_width("lenet_300_100", target)
    count = models.prunable_count(models.build("lenet_300_100", width=width))
    assert abs(count - target) / target < 0.02


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="declared: lenet_300_100"):
        models.build("alexnet")
