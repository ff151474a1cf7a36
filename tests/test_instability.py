import numpy as np
import pandas as pd
import pytest
import torch

from lth.report import instability
from lth.nn import models
from lth.nn.training import Split, evaluate


def test_alphas_are_evenly_spaced_with_both_endpoints():
    points = instability.alphas(30)
    assert len(points) == 30 and points[0] == 0.0 and points[-1] == 1.0
    assert np.allclose(np.diff(points), 1 / 29)
    with pytest.raises(ValueError, match="at least 2"):
        instability.alphas(1)


def test_barrier_of_a_known_path():
    # endpoints 10 % and 12 % error, a bump to 30 %: barrier 0.30 - 0.11
    assert instability.barrier([0.10, 0.20, 0.30, 0.15, 0.12]) == pytest.approx(0.19)
    # a straight line between the endpoints has no barrier; a dip gives a negative one
    assert instability.barrier(np.linspace(0.1, 0.2, 7)) == pytest.approx(0.05)  # max is an endpoint
    assert instability.barrier([0.2, 0.2, 0.2]) == 0.0
    assert instability.barrier([0.2, 0.1, 0.2]) == 0.0


def test_interpolation_is_linear_keeps_zeros_and_integer_buffers():
    w1 = {"w": np.array([[1.0, 0.0], [2.0, -4.0]], dtype=np.float32), "n": np.array(7)}
    w2 = {"w": np.array([[3.0, 0.0], [0.0, 4.0]], dtype=np.float32), "n": np.array(3)}
    mid = instability.interpolate(w1, w2, 0.25)  # 0.25 * w1 + 0.75 * w2
    assert mid["w"].tolist() == [[2.5, 0.0], [0.5, 2.0]] and mid["w"].dtype == np.float32
    assert mid["n"] == 7
    assert np.array_equal(instability.interpolate(w1, w2, 1.0)["w"], w1["w"])
    assert np.array_equal(instability.interpolate(w1, w2, 0.0)["w"], w2["w"])


def _split(n, seed):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g))


def test_path_endpoints_are_the_two_networks_and_the_mask_holds():
    a = {k: v.numpy() for k, v in models.build("lenet_300_100", 1).state_dict().items()}
    b = {k: v.numpy() for k, v in models.build("lenet_300_100", 2).state_dict().items()}
    keep = np.random.default_rng(0).random(a["fc1.weight"].shape) < 0.3
    a["fc1.weight"] = np.where(keep, a["fc1.weight"], 0).astype(np.float32)
    b["fc1.weight"] = np.where(keep, b["fc1.weight"], 0).astype(np.float32)
    split = _split(500, 0)
    model = models.build("lenet_300_100")
    rows = instability.evaluate_path(model, a, b, instability.alphas(5), {"test": split})
    assert [r["alpha"] for r in rows] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for weights, row in ((b, rows[0]), (a, rows[-1])):
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        loss, acc = evaluate(model, split)
        assert row["loss"] == pytest.approx(loss) and row["error"] == pytest.approx(1 - acc)
    # the model holds the last interpolation (alpha = 1): the pruned weights are still zero
    assert not model.fc1.weight.detach().numpy()[~keep].any()


def test_batchnorm_statistics_are_recomputed_on_the_fixed_batches():
    model = models.build("vgg16", 0, width=0.0625)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    batch = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    instability.recompute_batchnorm(model, norms, [batch])
    # after one batch with a cumulative average, the first BatchNorm holds that batch's statistics
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        out = conv(batch)
    assert torch.allclose(norms[0].running_mean, out.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(norms[0].running_var, out.var(dim=(0, 2, 3), unbiased=True), atol=1e-4)
    assert norms[0].momentum == 0.1 and int(norms[0].num_batches_tracked) == 1


def test_summary_flags_stable_and_matching():
    rows = []
    for level, errors, remaining in ((0, [0.10, 0.11, 0.10], 100.0), (3, [0.10, 0.20, 0.12], 51.3)):
        for pair in (0, 1):
            for split in ("test", "train"):
                for alpha, error in zip((0.0, 0.5, 1.0), errors):
                    rows.append({"run": "imp", "lottery": "imp", "level": level, "variant": "ticket", "k": "0it",
                                 "pair": pair, "alpha": alpha, "split": split, "loss": 0.0, "error": error,
                                 "weights_remaining_pct": remaining, "dense_test_accuracy": 0.895})
    result = instability.summarise(pd.DataFrame(rows), threshold=0.02, matching=0.002).set_index("level")
    assert result.loc[0, "instability_test"] == pytest.approx(0.01) and result.loc[0, "stable"]
    assert result.loc[3, "instability_test"] == pytest.approx(0.09) and not result.loc[3, "stable"]
    assert result.loc[0, "pairs"] == 2 and result.loc[0, "instability_test_std"] == 0.0
    # accuracy = 1 - mean endpoint error: 0.90 (drop -0.005: matching) and 0.89 (drop 0.005: not)
    assert result.loc[0, "test_accuracy"] == pytest.approx(0.90) and result.loc[0, "matching"]
    assert result.loc[3, "test_accuracy"] == pytest.approx(0.89) and not result.loc[3, "matching"]


@pytest.mark.slow
def test_copies_with_the_schedule_reset_train_all_steps_from_theta_k(tmp_path, small_idx_dataset):
    """LMC Fig. 4: instability.schedule [remaining, reset] trains the copies of theta_k both
    for the remaining T - k steps and for T steps from step 0; both are rows (variants) of
    one instability table, and the IDs of the remaining-steps copies do not change."""
    import json

    import pandas as pd

    from conftest import run, tiny_config
    from lth.plan import build, config
    cfg = tiny_config(small_idx_dataset, levels=0, train={"iterations": "40it", "eval_every": "10it"},
                      instability={"levels": [0], "points": ["10it"], "pairs": 1, "alphas": 3, "train_subset": 100,
                                   "schedule": ["remaining", "reset"]})
    assert run(tmp_path, cfg) == {"init": 1, "train": 7, "snapshot": 1, "interpolate": 3, "instability": 1,
                                  "summary": 1, "anatomy": 1, "correlation": 1}
    plan = build.build(config.validate(dict(cfg, results=str(tmp_path / "results"))))
    starts = {}
    for e in plan.runs[0].pairs:
        for c in ("a", "b"):
            spec = json.loads((tmp_path / plan.stages[e["path"].upstream[c]].output("spec")).read_text())
            starts.setdefault((e["variant"], e["k"]), set()).add(spec["resolved"]["start_iteration"])
    assert starts == {("ticket", "0it"): {0}, ("ticket", "10it"): {10}, ("ticket, schedule reset", "10it"): {0}}
    table = pd.read_csv(tmp_path / plan.instability.output("summary"))
    assert sorted(zip(table.variant, table.k)) == [("ticket", "0it"), ("ticket", "10it"),
                                                    ("ticket, schedule reset", "10it")]
    plain = dict(cfg, instability={**cfg["instability"], "schedule": ["remaining"]})
    remaining = build.build(config.validate(dict(plain, results=str(tmp_path / "results"))))
    assert {s for s in remaining.stages if remaining.stages[s].kind == "train"} < \
        {s for s in plan.stages if plan.stages[s].kind == "train"}
