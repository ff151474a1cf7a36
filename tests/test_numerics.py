"""Explicit numerics: precision in the training IDs, a deterministic mode, and the device
facts recorded with every training."""
import os

import pytest
import torch

from lth import config, numerics, plan
from test_divergence import RECIPE, fit, splits  # noqa: F401  (fixture)


@pytest.fixture
def restore():
    yield
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False


def test_precision_sets_both_tf32_switches(restore):
    numerics.configure("tf32", False)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    numerics.configure("fp32", False)  # strict: torch's own default lets convolutions use TF32
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_deterministic_mode_gives_the_same_bits_on_the_cpu(restore, splits):  # noqa: F811
    plain, _ = fit(splits, iterations="30it", eval_every="30it")
    numerics.configure("fp32", True)
    assert torch.are_deterministic_algorithms_enabled() and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    strict, _ = fit(splits, iterations="30it", eval_every="30it")
    assert strict.metrics == plain.metrics


def test_a_refused_operation_becomes_one_line():
    torch_error = RuntimeError("index_add_cuda_ does not have a deterministic implementation, but you set "
                               "'torch.use_deterministic_algorithms(True)'.\nYou can turn off ...")
    line = str(numerics.explain(torch_error))
    assert "\n" not in line and "set deterministic: false" in line
    assert numerics.explain(RuntimeError("out of memory")) is None


def test_precision_is_part_of_the_training_ids_only():
    base = plan.build(config.validate({"levels": 1}))
    tf32 = plan.build(config.validate({"levels": 1, "train": {"precision": "tf32"}}))
    assert base.levels[0]["train"].upstream == tf32.levels[0]["train"].upstream  # same init
    assert base.levels[0]["train"].id != tf32.levels[0]["train"].id
    same = plan.build(config.validate({"levels": 1, "train": {"precision": "fp32"}, "deterministic": True}))
    assert set(same.stages) == set(base.stages)  # the default, written out, and an execution setting


def test_device_facts_on_the_cpu():
    info = numerics.device_info("cpu")
    assert info["torch"] == torch.__version__ and "gpu" not in info
