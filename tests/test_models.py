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


def test_init_std_scale_scales_every_fresh_draw_of_the_lottery(tmp_path):
    """init.std_scale: theta_0 and the random reinit's draw are the unscaled draws times the
    scale (prunable weights only); at 1 the IDs and bits are the default's; a list is one
    lottery per scale."""
    import subprocess
    import sys
    import numpy as np
    from lth.plan import build, config
    from lth.runtime import job as jobs
    from lth.store import ptfile
    default = build.build(config.validate({"levels": 1, "controls": {"random_reinit": True}}))
    assert build.build(config.validate({"levels": 1, "controls": {"random_reinit": True},
                                        "init": {"std_scale": 1.0}})).stages.keys() == default.stages.keys()
    both = build.build(config.validate({"levels": 1, "init": {"std_scale": [1.0, 0.5]}}))
    assert len(both.runs) == 2 and len({run.levels[0]["train"].id for run in both.runs}) == 2
    outputs = {}
    for scale in (1.0, 0.5):
        cfg = config.validate({"results": str(tmp_path / str(scale)), "levels": 1, "init": {"std_scale": scale},
                               "controls": {"random_reinit": True}})
        p = build.build(cfg)
        init = p.stages[p.levels[0]["train"].upstream["start"]]
        reinit = p.stages[p.levels[1]["random_reinit"].upstream["start"]]
        prune = p.levels[1]["prune"]
        from lth.store import masks
        jobs.write_manifests([init, reinit], str(tmp_path / str(scale)))
        # the reinit needs a mask: a hand-made one stands in for the prune stage's
        masks.write(tmp_path / prune.output("mask"), {n: np.ones(s, bool) for n, s in
                                                      (("fc1.weight", (300, 784)), ("fc2.weight", (100, 300)),
                                                       ("fc3.weight", (10, 100)))})
        from lth.store import records
        records.write(tmp_path / prune.dir, {"kind": "prune", "id": prune.id}, {"mask": "mask.parquet"})
        for stage in (init, reinit):
            proc = subprocess.run([sys.executable, "-m", "lth", "run", jobs.manifest_path(str(tmp_path / str(scale)),
                                                                                           stage.kind, stage.id)],
                                  cwd=tmp_path, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs[scale] = (ptfile.load(tmp_path / init.output("weights")), ptfile.load(tmp_path / reinit.output("start")))
    for one, half in zip(outputs[1.0], outputs[0.5]):
        for name in ("fc1.weight", "fc2.weight", "fc3.weight"):
            assert np.array_equal(half[name], one[name] * np.float32(0.5)), name
        assert np.array_equal(half["fc1.bias"], one["fc1.bias"])
