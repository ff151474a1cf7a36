"""Telemetry (lth.nn.telemetry): what it records equals independent numpy arithmetic on the
weights, it does not change the training, it resumes bit for bit, and the workflow records,
verifies and draws it; learning curves and accuracy_at equal metrics.parquet."""
import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from conftest import RECIPE, half_mask, run, tiny_config

from lth.nn import checkpoint, models, telemetry
from lth.nn.training import train

WATCH = {"every": "20it", "early_every": "5it", "early_until": "20it", "examples": 300, "weights": 10, "seed": 3}
SETTINGS = {**RECIPE, "iterations": "60it", "eval_every": "30it"}


def watched(splits, model, mask, tmp_path, name="scratch", settings=WATCH):
    layers = model.prunable()
    start = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    if mask:
        start = {k: np.where(mask[k], v, 0).astype(v.dtype) if k in mask else v for k, v in start.items()}
    origin = {k: v.detach().numpy() * 1.0 for k, v in models.build("lenet_300_100", 0).state_dict().items()}
    points = telemetry.points(settings, 0, 60, 40)
    return telemetry.Watch(model, layers, mask, origin, start, settings, splits, points, tmp_path / name), start, origin


def table_of(watch) -> pd.DataFrame:
    return pd.DataFrame(watch.finish())


def value(table, iteration, layer, quantity):
    rows = table[(table.iteration == iteration) & (table.layer == layer) & (table.quantity == quantity)]
    assert len(rows) == 1, (iteration, layer, quantity)
    return float(rows.value.iloc[0])


def test_points_are_start_early_regular_and_end():
    assert telemetry.points(WATCH, 0, 60, 40) == [0, 5, 10, 15, 20, 40, 60]
    assert telemetry.points({**WATCH, "early_until": "0it"}, 7, 50, 40) == [7, 20, 40, 50]  # a rewound start at 7


@pytest.fixture(scope="module")
def one_run(splits, tmp_path_factory):
    """A masked LeNet trained 60 iterations with and without telemetry on the small Fashion-MNIST."""
    tmp = tmp_path_factory.mktemp("telemetry")
    plain = models.build("lenet_300_100", 0)
    mask = half_mask(plain)
    expected = train(plain, mask, splits, SETTINGS)
    model = models.build("lenet_300_100", 0)
    watch, start, origin = watched(splits, model, mask, tmp)
    start_model = copy.deepcopy(model)
    result = train(model, mask, splits, SETTINGS, watch=watch)
    return {"plain": plain, "expected": expected, "model": model, "result": result, "mask": mask,
            "start": start, "origin": origin, "table": table_of(watch), "watch": watch,
            "start_model": start_model, "scratch": tmp / "scratch"}


def survivors(state, mask, layers):
    return {n: np.asarray(state[n], dtype=np.float64)[mask[n]] for n in layers}


def test_telemetry_does_not_change_the_training(one_run):
    assert one_run["result"].metrics == one_run["expected"].metrics
    for k, v in one_run["model"].state_dict().items():
        assert torch.equal(v, one_run["plain"].state_dict()[k]), k


def test_start_point_and_final_point_against_numpy(one_run):
    table, mask, model = one_run["table"], one_run["mask"], one_run["model"]
    layers = model.prunable()
    final = survivors({k: v.numpy() for k, v in model.state_dict().items()}, mask, layers)
    origin = survivors(one_run["origin"], mask, layers)
    start = survivors(one_run["start"], mask, layers)
    for layer in layers + ["all"]:
        assert value(table, 0, layer, "sign_changed_init") == 0 and value(table, 0, layer, "sign_changed_start") == 0
        assert value(table, 0, layer, "l2_init") == 0 and value(table, 0, layer, "cos_init") == pytest.approx(1)
    cat = {name: np.concatenate([d[n] for n in layers]) for name, d in (("final", final), ("origin", origin),
                                                                        ("start", start))}
    for layer in layers + ["all"]:
        w, w0 = (cat["final"], cat["origin"]) if layer == "all" else (final[layer], origin[layer])
        assert value(table, 60, layer, "sign_changed_init") == pytest.approx(np.mean(np.sign(w) != np.sign(w0)),
                                                                            abs=1e-12)
        assert value(table, 60, layer, "mean_abs") == pytest.approx(np.mean(np.abs(w)), rel=1e-9)
        assert value(table, 60, layer, "l2_init") == pytest.approx(np.linalg.norm(w - w0), rel=1e-9)
        cos = w @ w0 / np.linalg.norm(w) / np.linalg.norm(w0)
        assert value(table, 60, layer, "cos_init") == pytest.approx(cos, rel=1e-9)
        assert value(table, 60, layer, "l2_final") == 0 and value(table, 60, layer, "cos_final") == pytest.approx(1)
        ws = cat["start"] if layer == "all" else start[layer]
        assert value(table, 0, layer, "l2_final") == pytest.approx(np.linalg.norm(ws - w), rel=1e-6)
    assert value(table, 60, "all", "sign_changed_init") > 0  # the test can fail: signs did change


def test_the_ten_weights_are_survivors_with_their_final_values(one_run):
    table, mask, model = one_run["table"], one_run["mask"], one_run["model"]
    weights = table[(table.quantity == "weight") & (table.iteration == 60)]
    assert len(weights) == 10
    state = model.state_dict()
    for r in weights.itertuples():
        assert mask[r.layer].reshape(-1)[r.index]
        assert r.value == float(state[r.layer].reshape(-1)[r.index])


def test_gradient_norm_and_test_subset_at_the_start(one_run, splits):
    from lth.nn.training import epoch_order
    model = one_run["start_model"]  # copied before train() zeroed its pruned weights: zero them here
    with torch.no_grad():
        for name, keep in one_run["mask"].items():
            dict(model.named_parameters())[name].mul_(torch.from_numpy(keep).float())
    batch = epoch_order(len(splits["train"]), SETTINGS["seed"], 0)[:SETTINGS["batch_size"]]  # the first step's
    loss = F.cross_entropy(model(splits["train"].x[batch]), splits["train"].y[batch])
    grads = torch.autograd.grad(loss, [dict(model.named_parameters())[k] for k in model.prunable()])
    masked = [g.detach().double().numpy()[one_run["mask"][k]] for g, k in zip(grads, model.prunable())]
    expected = np.sqrt(sum(float(g @ g) for g in masked))
    assert value(one_run["table"], 0, "all", "grad_norm") == pytest.approx(expected, rel=1e-5)
    assert np.isnan(value(one_run["table"], 60, "all", "grad_norm"))  # no step follows the end
    n = WATCH["examples"]
    model.eval()
    with torch.no_grad():
        accuracy = (model(splits["test"].x[:n]).argmax(1) == splits["test"].y[:n]).double().mean().item()
    assert value(one_run["table"], 0, "all", "test_accuracy") == pytest.approx(accuracy)
    assert not one_run["scratch"].exists()  # the kept points are removed once the distances are known


@pytest.mark.slow
def test_resume_gives_the_same_table_bit_for_bit(one_run, splits, tmp_path):
    class Interrupt(Exception):
        pass
    ckpt = checkpoint.Checkpointing(tmp_path / "c.ckpt", every=15, identity="abc")
    model = models.build("lenet_300_100", 0)
    watch, _, _ = watched(splits, model, one_run["mask"], tmp_path, "c.telemetry")

    def interrupt(line):
        if line.startswith("it 30/"):
            raise Interrupt
    with pytest.raises(Interrupt):
        train(model, one_run["mask"], splits, SETTINGS, checkpointing=ckpt, watch=watch, log=interrupt)
    assert watch.count == 5  # 0, 5, 10, 15 at the checkpoint, then 20: cut on resume
    model = models.build("lenet_300_100", 0)
    watch, _, _ = watched(splits, model, one_run["mask"], tmp_path, "c.telemetry")
    lines = []
    train(model, one_run["mask"], splits, SETTINGS, checkpointing=ckpt, watch=watch, log=lines.append)
    assert "resuming from checkpoint at iteration 15" in lines
    pd.testing.assert_frame_equal(table_of(watch), one_run["table"], check_exact=True)

    # a checkpoint whose kept points are gone: started over, same table
    model = models.build("lenet_300_100", 0)
    watch, _, _ = watched(splits, model, one_run["mask"], tmp_path, "c.telemetry")
    with pytest.raises(Interrupt):
        train(model, one_run["mask"], splits, SETTINGS, checkpointing=ckpt, watch=watch, log=interrupt)
    (tmp_path / "c.telemetry").unlink()
    model = models.build("lenet_300_100", 0)
    watch, _, _ = watched(splits, model, one_run["mask"], tmp_path, "c.telemetry")
    lines = []
    train(model, one_run["mask"], splits, SETTINGS, checkpointing=ckpt, watch=watch, log=lines.append)
    assert any("lacks this training's telemetry points; starting over" in line for line in lines)
    pd.testing.assert_frame_equal(table_of(watch), one_run["table"], check_exact=True)


def test_settle_rule_on_hand_made_series():
    from lth.report.telemetry import settle
    assert settle([0, 10, 20, 30, 40], [0.0, 0.05, 0.095, 0.1, 0.1]) == 20
    assert settle([0, 10, 20, 30], [0.0, 0.2, 0.0, 0.1]) == 30  # still moving at the end: the last point
    assert settle([0, 10], [0.1, 0.1]) == 0
    assert settle([0, 10, 20], [0.1, 0.3, 0.105], tolerance=0.01) == 20


def test_curve_levels_are_the_nearest_to_the_papers():
    from lth.report.summary import curve_levels
    pct = [100 * 0.8 ** level for level in range(16)]
    frame = pd.DataFrame({"variant": "ticket", "level": range(16), "weights_remaining_pct": pct})
    assert curve_levels(frame) == [0, 3, 7, 12, 15]  # 100, 51.2, 21.0, 6.9, 3.5 %
    assert curve_levels(frame.iloc[:9]) == [0, 3, 7]
    assert curve_levels(frame, [2, 30]) == [2]


@pytest.mark.slow
def test_workflow_records_verifies_and_draws_telemetry(tmp_path, small_idx_dataset):
    from lth.plan import build as plan
    from lth.plan import config
    from lth.report.summary import read_metrics
    from lth.store.records import problems
    cfg = tiny_config(small_idx_dataset, levels=2, controls={"random_reinit": True},
                      telemetry={"levels": [1], "every": "10it", "early_every": "5it", "early_until": "10it"},
                      summary={"accuracy_at": ["10it"]})
    assert run(tmp_path, cfg) == {"init": 1, "train": 5, "prune": 2, "rewind": 2, "reinit": 2, "summary": 1,
                                  "anatomy": 1, "correlation": 1, "telemetry": 1}
    validated = config.validate(dict(cfg, results=str(tmp_path / "results")))
    planned = plan.build(validated)
    without = plan.build(config.validate({k: v for k, v in dict(cfg, results=str(tmp_path / "results")).items()
                                          if k != "telemetry"}))
    assert planned.levels[0]["train"].id == without.levels[0]["train"].id  # not watched: its ID holds
    assert planned.levels[1]["train"].id != without.levels[1]["train"].id
    ticket = tmp_path / "results" / "train" / planned.levels[1]["train"].id
    reinit = tmp_path / "results" / "train" / planned.levels[1]["random_reinit"].id
    from lth.store import ptfile
    for stage in (ticket, reinit):
        assert "telemetry" in json.loads((stage / "record.json").read_text())["files"]
        table = pd.read_parquet(stage / "telemetry.parquet")
        assert sorted(set(table.iteration)) == [0, 5, 10, 20]
        weights = ptfile.load(stage / "weights.pt")  # the ten weights at the end: the weights file's values
        tracked = table[(table.quantity == "weight") & (table.iteration == 20)]
        assert len(tracked) == 10
        assert all(r.value == float(weights[r.layer].reshape(-1)[r.index]) for r in tracked.itertuples())
    assert not (tmp_path / "results" / "train" / planned.levels[0]["train"].id / "telemetry.parquet").exists()
    analysis = next((tmp_path / "results" / "telemetry").iterdir())
    frame = pd.read_csv(analysis / "telemetry.csv")
    assert sorted(frame.variant) == ["random_reinit", "ticket"] and (analysis / "telemetry.png").stat().st_size > 0

    summary_dir = next((tmp_path / "results" / "summary").iterdir())
    summary = pd.read_parquet(summary_dir / "summary.parquet")
    for r in summary.itertuples():
        metrics = read_metrics(tmp_path / "results" / "train" / r.train_id / "metrics.parquet")
        test = metrics[metrics.split == "test"].set_index("iteration").accuracy
        assert r.test_accuracy_at_10it == test.loc[10]
    assert (summary_dir / "learning_curves.png").stat().st_size > 0

    raw = bytearray((ticket / "telemetry.parquet").read_bytes())
    raw[len(raw) // 2] ^= 1
    (ticket / "telemetry.parquet").write_bytes(bytes(raw))
    assert problems(ticket) == ["telemetry.parquet differs from its record (sha256)"]


def test_curves_equal_the_metrics_tables(tmp_path):
    from lth.report import summary
    from lth.stages.train import write_metrics
    rows = {"a": [(0, 0.1), (10, 0.5), (20, 0.7)], "b": [(0, 0.1), (10, 0.3), (20, 0.4)],
            "c": [(0, 0.2), (10, 0.7), (20, 0.9)]}
    paths = {}
    for tid, points in rows.items():
        paths[tid] = tmp_path / f"{tid}.parquet"
        write_metrics(paths[tid], [{"iteration": i, "split": s, "loss": 1.0, "accuracy": a if s == "test" else 0.0}
                                   for i, a in points for s in ("validation", "test")])
    frame = pd.DataFrame({"lottery": "x", "variant": ["ticket", "random_reinit", "ticket"], "level": [1, 1, 1],
                          "train_id": ["a", "b", "c"], "weights_remaining_pct": 80.0})
    lines = summary.curves(frame, paths)
    ticket = lines[lines.variant == "ticket"].set_index("iteration")
    assert list(ticket.test_accuracy) == [0.15000000000000002, 0.6, 0.8] and set(ticket.replicates) == {2}
    assert list(lines[lines.variant == "random_reinit"].test_accuracy) == [0.1, 0.3, 0.4]
    summary.plot_curves(lines, [1], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("override, words", [
    ({"telemetry": {"levels": [0], "every": "20000it"}}, "config: telemetry.every = 20000it = 20000 iterations"),
    ({"telemetry": {"levels": [0], "early_until": "20ep"}}, "config: telemetry.early_until = 20ep"),
    ({"summary": {"accuracy_at": ["1500it"]}}, "config: summary.accuracy_at has 1500it, not an evaluation point"),
    ({"train": {"eval_every": "20000it"}}, "config: train.eval_every = 20000it = 20000 iterations, longer than"),
])
def test_intervals_beyond_training_are_refused_in_one_line(override, words):
    from lth.plan import config
    from lth.plan.config import ConfigError
    cfg = {"levels": 1, "train": {"iterations": "10000it", "eval_every": "1000it"}, **override}
    if "train" in override:
        cfg["train"] = {"iterations": "10000it", **override["train"]}
    with pytest.raises(ConfigError) as raised:
        config.validate(cfg)
    assert words in str(raised.value) and "\n" not in str(raised.value)
