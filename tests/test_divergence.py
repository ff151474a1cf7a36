"""Divergence is an error, not a result; data that does not fit the model is refused in one
line naming the file. Real tiny trainings on the first 1,200 Fashion-MNIST images."""
import numpy as np
import pytest

from conftest import RECIPE, fit, jobs, snakemake, tiny_config, write_idx_dataset

from lth.nn import data, divergence, models
from lth.nn.training import train


def test_sgd_at_a_huge_rate_stops_at_the_first_non_finite_loss(splits):
    with pytest.raises(divergence.Diverged) as err:
        fit(splits, optimizer="sgd", lr=1e6)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("diverged at iteration ") and "loss nan" in message
    assert int(message.split()[3].rstrip(":")) < 50  # at once, not at the next evaluation
    assert "learning rate (1e+06 with sgd) is likely too high" in message


@pytest.mark.slow
def test_adam_at_a_huge_rate_ends_far_above_its_start_and_the_factor_is_configurable(splits):
    with pytest.raises(divergence.Diverged, match=r"validation loss .* above 10 x its start .*train.divergence_factor"):
        fit(splits, lr=1e6)
    result, _ = fit(splits, lr=1e6, divergence_factor=1e30)  # the user's call: accepted
    val = [m["loss"] for m in result.metrics if m["split"] == "validation"]
    assert val[-1] > 1000 * val[0]
    result, _ = fit(splits)  # a sane rate is untouched
    val = [m["loss"] for m in result.metrics if m["split"] == "validation"]
    assert val[-1] < val[0]


def test_final_check_compares_the_last_validation_loss_with_the_first():
    rows = [{"iteration": i, "split": "validation", "loss": loss} for i, loss in ((0, 2.0), (50, 0.5), (100, 25.0))]
    with pytest.raises(divergence.Diverged, match="validation loss 25 at iteration 100"):
        divergence.check_final(rows, 0, {"lr": 0.1, "optimizer": "sgd"})
    divergence.check_final(rows, 0, {"lr": 0.1, "optimizer": "sgd", "divergence_factor": 20})
    divergence.check_final(rows[:1], 0, {"lr": 0.1, "optimizer": "sgd"})  # nothing trained: nothing to judge


@pytest.mark.slow
def test_a_diverged_training_writes_no_stage_and_nothing_downstream_runs(tmp_path, small_idx_dataset):
    cfg = tiny_config(small_idx_dataset, levels=1, train={"optimizer": "sgd", "lr": 1e6})
    (tmp_path / "config.yaml").write_text(__import__("yaml").safe_dump(cfg))
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert jobs(proc) == {"init": 1}
    trains = tmp_path / "results" / "train"
    assert not any((d / "weights.pt").exists() or (d / "record.json").exists()
                   for d in (trains.iterdir() if trains.exists() else ()))
    assert not (tmp_path / "results" / "prune").exists()
    log = next((tmp_path / "results" / "logs" / "train").glob("????????????.log")).read_text().strip().splitlines()
    assert log[-1].startswith("error: train results/train/") and ": diverged at iteration " in log[-1]
    assert sum(line.startswith("error:") for line in log) == 1 and "Traceback" not in "\n".join(log)


# ---- data that does not fit the model: one line naming the file, before training ----

def _copy(small, directory, **change):
    full = data.load("fashion_mnist", str(small))
    x, y = full.train.x.copy(), full.train.y.copy()
    if "label" in change:
        y[7] = change["label"]
    if "size" in change:
        x = np.zeros((len(x), change["size"], change["size"]), dtype=np.uint8)
    test_x = full.test.x if "size" not in change else np.zeros((len(full.test), change["size"], change["size"]))
    test_y = full.test.y
    if "no_test" in change:
        test_x, test_y = test_x[:0], test_y[:0]
    return write_idx_dataset(directory, x, y, test_x, test_y)


@pytest.mark.slow
@pytest.mark.parametrize("change, words", [
    ({"label": 12}, ("label 12 of example 7", "train-labels-idx1-ubyte.gz", "outside the model's 10 classes")),
    ({"size": 32}, ("images in", "train-images-idx3-ubyte.gz", "are 1x32x32, the model takes 1x28x28")),
    ({"no_test": True}, ("the test set in", "t10k-labels-idx1-ubyte.gz", "has no examples")),
])
def test_data_that_does_not_fit_the_model_stops_the_job_in_one_line(tmp_path, small_idx_dataset, change, words):
    bad = _copy(small_idx_dataset, tmp_path / "data", **change)
    cfg = tiny_config(bad, levels=0)
    (tmp_path / "config.yaml").write_text(__import__("yaml").safe_dump(cfg))
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    log = next((tmp_path / "results" / "logs" / "train").glob("????????????.log")).read_text().strip().splitlines()
    errors = [line for line in log if line.startswith("error:")]
    assert len(errors) == 1 and all(w in errors[0] for w in words), log
    assert not any(line.startswith("train ") and " it " in line for line in log), "no training step ran"


@pytest.mark.slow
def test_a_training_set_too_small_for_the_split_is_refused_before_any_job(tmp_path, small_idx_dataset):
    cfg = tiny_config(small_idx_dataset, levels=0, data={"validation_size": 1150})
    (tmp_path / "config.yaml").write_text(__import__("yaml").safe_dump(cfg))
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0 and jobs(proc) == {}
    assert "config: data.validation_size = 1150 with train.batch_size = 60 does not fit the 1200 training " \
           f"examples ({small_idx_dataset}/train-labels-idx1-ubyte.gz)" in proc.stdout + proc.stderr


def test_a_start_that_is_not_finite_is_blamed_on_its_maker_not_the_learning_rate(splits):
    import torch
    model = models.build("lenet_300_100", 0)
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("inf")
    with pytest.raises(divergence.Diverged) as err:
        train(model, None, splits, RECIPE)
    message = str(err.value)
    assert "\n" not in message and message.startswith("the start weights hold a value that is not finite")
    assert "learning rate (" not in message


@pytest.mark.slow
def test_global_pruning_that_empties_a_layer_stops_its_prune_in_one_line(tmp_path, small_idx_dataset):
    """Global ranking at rate 0.999: by level 2 a layer has no weight left (layerwise
    schedules are refused before any job: lth.plan.config)."""
    cfg = tiny_config(small_idx_dataset, levels=2, prune={"strategy": "global", "rate": 0.999})
    (tmp_path / "config.yaml").write_text(__import__("yaml").safe_dump(cfg))
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    lines = [line for log in (tmp_path / "results" / "logs" / "prune").glob("????????????.log")
             for line in log.read_text().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "global pruning at rate 0.999 leaves" in lines[0] and "without weights" in lines[0]
    assert not any(p.name == "mask.parquet" and not p.parent.joinpath("record.json").exists()
                   for p in (tmp_path / "results" / "prune").rglob("*"))
