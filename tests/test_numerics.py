"""Explicit numerics: precision in the training IDs, a deterministic mode, and the device
facts recorded with every training."""
import os

import pytest
import torch

from lth.plan import config, build as plan
from lth.nn import models, numerics
from conftest import RECIPE, fit


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


def test_deterministic_mode_gives_the_same_bits_on_the_cpu(restore, splits):
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
    bf16 = plan.build(config.validate({"levels": 1, "train": {"precision": "bf16"}}))
    assert len({base.levels[0]["train"].id, tf32.levels[0]["train"].id, bf16.levels[0]["train"].id}) == 3
    assert base.levels[0]["train"].upstream == bf16.levels[0]["train"].upstream
    same = plan.build(config.validate({"levels": 1, "train": {"precision": "fp32"}, "deterministic": True}))
    assert set(same.stages) == set(base.stages)  # the default, written out, and an execution setting


def test_device_facts_on_the_cpu():
    info = numerics.device_info("cpu")
    assert info["torch"] == torch.__version__ and "gpu" not in info


@pytest.mark.slow
def test_bf16_runs_forward_passes_in_bfloat16_and_keeps_the_rest_float32(splits):
    from conftest import half_mask
    from lth.nn.training import evaluate, train
    plain, _ = fit(splits, iterations="60it", eval_every="30it")
    model = models.build("lenet_300_100", 0)
    mask = half_mask(model)
    seen = set()
    model.fc1.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    bf16 = train(model, mask, splits, {**RECIPE, "iterations": "60it", "eval_every": "30it", "precision": "bf16"})
    assert seen == {torch.bfloat16}  # every forward, training and evaluation alike
    state = model.state_dict()
    assert all(v.dtype == torch.float32 for v in state.values())
    assert all(torch.count_nonzero(state[n][~torch.from_numpy(keep)]) == 0 for n, keep in mask.items())
    again = train(models.build("lenet_300_100", 0), half_mask(model), splits,
                  {**RECIPE, "iterations": "60it", "eval_every": "30it", "precision": "bf16"})
    assert again.metrics == bf16.metrics  # the same bits twice on the CPU
    # the same network evaluated both ways: close, not equal (8 mantissa bits in the products)
    loss32, acc32 = evaluate(model, splits["test"])
    loss16, acc16 = evaluate(model, splits["test"], precision="bf16")
    assert loss16 != loss32 and abs(loss16 - loss32) < 0.05 * loss32 and abs(acc16 - acc32) < 0.05
    # and it learns like float32 does (the half mask aside)
    assert bf16.metrics[-1]["accuracy"] > 0.5 and plain.metrics[-1]["accuracy"] > 0.5


@pytest.mark.slow
def test_bf16_batchnorm_statistics_stay_float32_and_close():
    from lth.report import instability
    model = models.build("resnet20", 0)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    batches = [torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    instability.recompute_batchnorm(model, norms, batches)
    means = [m.running_mean.clone() for m in norms]
    instability.recompute_batchnorm(model, norms, batches, "bf16")
    assert all(m.running_mean.dtype == torch.float32 for m in norms)
    assert any(not torch.equal(a, m.running_mean) for a, m in zip(means, norms))
    assert all(torch.allclose(a, m.running_mean, rtol=0.05, atol=0.05) for a, m in zip(means, norms))


@pytest.mark.slow
def test_a_bf16_workflow_runs_every_forward_pass_to_the_end(tmp_path, small_idx_dataset):
    """Real Snakemake run with train.precision: bf16 through trainings, instability copies,
    interpolation and the landscape; the trainings record the precision they ran in."""
    import json

    from conftest import run, tiny_config
    raw = tiny_config(small_idx_dataset, levels=1, train={"precision": "bf16"},
                      instability={"levels": [1], "pairs": 1, "alphas": 3},
                      landscape={"levels": [1], "grid": 3, "train_subset": 100})
    counts = run(tmp_path, raw)
    assert counts["train"] == 4 and counts["interpolate"] == 1 and counts["landscape"] == 1
    p = plan.build(config.validate(raw))
    for level in p.levels:
        spec = json.loads((tmp_path / level["train"].output("spec")).read_text())
        assert spec["settings"]["train"]["precision"] == "bf16"
