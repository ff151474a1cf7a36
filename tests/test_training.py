import pytest
import torch

from conftest import SETTINGS, half_mask, random_splits

from lth.nn import models
from lth.plan.steps import Step
from lth.nn.training import epoch_order, train


def test_step_parsing():
    assert Step.parse("500it").iterations(100) == 500
    assert Step.parse("2ep").iterations(916) == 1832
    assert Step.parse(7).iterations(3) == 7
    with pytest.raises(ValueError, match="500it or 2ep"):
        Step.parse("2 epochs")


@pytest.mark.parametrize("optimizer, wd", [("adam", 0.0), ("adam", 1e-4), ("sgd", 1e-4)])
def test_pruned_weights_stay_zero_and_get_no_optimizer_state(optimizer, wd):
    model = models.build("lenet_300_100", seed=0)
    mask = half_mask(model)
    settings = dict(SETTINGS, optimizer=optimizer, weight_decay=wd, lr=0.05 if optimizer == "sgd" else 1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, mask, random_splits(), settings)
    state = model.state_dict()
    for name, keep in mask.items():
        pruned = ~torch.from_numpy(keep)
        assert torch.count_nonzero(state[name][pruned]) == 0
        assert not torch.equal(state[name][~pruned], before[name][~pruned]), "survivors should train"


def test_optimizer_state_of_pruned_weights_stays_zero():
    from lth.nn import optim
    from lth.nn.training import apply_mask
    import torch.nn.functional as F
    model = models.build("lenet_300_100", seed=0)
    mask = half_mask(model)
    pairs = apply_mask(model, mask)
    params = list(model.parameters())
    opt = optim.make(params, SETTINGS)
    data = random_splits()["train"]
    for _ in range(3):
        loss = F.cross_entropy(model(data.x[:20]), data.y[:20])
        for p in params:
            p.grad = None
        loss.backward()
        torch._foreach_mul_([p.grad for p, _ in pairs], [m for _, m in pairs])
        opt.step()
    state = opt.state()
    for p, m in pairs:
        i = next(i for i, q in enumerate(params) if q is p)
        assert torch.count_nonzero(state["exp_avg"][i][m == 0]) == 0
        assert torch.count_nonzero(state["exp_avg_sq"][i][m == 0]) == 0


def test_training_is_bit_identical_for_the_same_seeds():
    results = []
    for _ in range(2):
        model = models.build("lenet_300_100", seed=3)
        result = train(model, half_mask(model), random_splits(), SETTINGS)
        results.append((model.state_dict(), result.metrics))
    (a, ma), (b, mb) = results
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ma == mb


def test_data_order_is_a_seeded_permutation_per_epoch():
    a, b = epoch_order(100, 0, 0), epoch_order(100, 0, 1)
    assert sorted(a.tolist()) == list(range(100))
    assert torch.equal(a, epoch_order(100, 0, 0)) and not torch.equal(a, b)
    assert not torch.equal(a, epoch_order(100, 1, 0))


def test_metrics_cover_evaluations_and_final_train_accuracy():
    model = models.build("lenet_300_100", seed=0)
    result = train(model, None, random_splits(), SETTINGS)  # 10 steps per epoch, 3 epochs
    assert result.iterations == 30
    iterations = sorted({r["iteration"] for r in result.metrics})
    assert iterations == [0, 10, 20, 30]
    final = {r["split"] for r in result.metrics if r["iteration"] == 30}
    assert final == {"validation", "test", "train"}


def test_glorot_init_is_seeded():
    a, b, c = (models.build("lenet_300_100", seed=s).state_dict() for s in (0, 0, 1))
    assert torch.equal(a["fc1.weight"], b["fc1.weight"]) and not torch.equal(a["fc1.weight"], c["fc1.weight"])
    std = a["fc1.weight"].std().item()
    assert abs(std - (2 / (784 + 300)) ** 0.5) < 0.002
    assert torch.count_nonzero(a["fc1.bias"]) == 0
    assert models.build("lenet_300_100").prunable() == ["fc1.weight", "fc2.weight", "fc3.weight"]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fast_loop_equals_a_plain_reference_loop(optimizer):
    """train() takes shortcuts (lth.nn.optim calls the fused kernels directly, index_select,
    grads set to None by hand); a plain torch.optim loop over the same batches must give
    the same bits."""
    import torch.nn.functional as F
    settings = dict(SETTINGS, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1e-3, weight_decay=1e-4)
    data = random_splits()
    fast = models.build("lenet_300_100", seed=1)
    mask = half_mask(fast)
    train(fast, mask, data, settings)

    ref = models.build("lenet_300_100", seed=1)
    params = dict(ref.named_parameters())
    masked = [(params[n], torch.from_numpy(k).float()) for n, k in mask.items()]
    with torch.no_grad():
        for p, m in masked:
            p.mul_(m)
    opt = (torch.optim.Adam(ref.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"], fused=True)
           if optimizer == "adam" else
           torch.optim.SGD(ref.parameters(), lr=settings["lr"], momentum=settings["momentum"],
                           weight_decay=settings["weight_decay"], fused=True))
    steps_per_epoch = len(data["train"]) // settings["batch_size"]
    for epoch in range(3):
        order = epoch_order(len(data["train"]), settings["seed"], epoch)
        for b in range(steps_per_epoch):
            index = order[b * 20:(b + 1) * 20]
            loss = F.cross_entropy(ref(data["train"].x[index]), data["train"].y[index])
            opt.zero_grad()
            loss.backward()
            for p, m in masked:
                p.grad.mul_(m)
            opt.step()
            with torch.no_grad():
                for p, m in masked:
                    p.mul_(m)
    for name, value in ref.state_dict().items():
        assert torch.equal(value, fast.state_dict()[name]), name


def test_learning_rate_warmup_and_milestones():
    from lth.nn.training import learning_rate
    s = {"lr": 0.1, "warmup": "4it", "milestones": ["10it", 20], "gamma": 0.1}
    assert [learning_rate(s, i, 100) for i in (0, 1, 3)] == pytest.approx([0.025, 0.05, 0.1])
    assert learning_rate(s, 9, 100) == 0.1
    assert learning_rate(s, 10, 100) == pytest.approx(0.01)
    assert learning_rate(s, 25, 100) == pytest.approx(0.001)
    assert learning_rate({"lr": 0.1, "warmup": "1ep", "milestones": [], "gamma": 0.1}, 4, 10) == pytest.approx(0.05)


def test_augment_crops_and_flips_each_image():
    from lth.nn.training import augment, augment_draws
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1
    offsets, flips = augment_draws(0, 5, 6, 2, pad=2)
    out = augment(x, offsets[0], flips[0], pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        candidates = [padded[i, :, r:r + 8, c:c + 8] for r in range(5) for c in range(5)]
        candidates += [t.flip(2) for t in candidates]
        assert any(torch.equal(out[i], t) for t in candidates)
    again = augment(x, *(t[0] for t in augment_draws(0, 5, 6, 2, pad=2)), pad=2)
    assert torch.equal(out, again)
    assert augment(x[:, 0], offsets[0], flips[0], pad=2).shape == (2, 8, 8)


def test_an_epochs_draws_at_once_are_each_steps_own_draws():
    """The loop draws an epoch's crops and flips in one go (one copy to a GPU, no per-step
    sync); each step's draws are still those of its own seeded generator, as when they were
    drawn step by step, so results (and stage IDs) did not change, and any step resumes."""
    from lth.nn.training import AUGMENT_STREAM, augment_draws, derived_seed
    offsets, flips = augment_draws(7, 10, 14, 6)
    for row, it in enumerate(range(10, 14)):
        generator = torch.Generator().manual_seed(derived_seed(7, it, AUGMENT_STREAM))
        assert torch.equal(offsets[row], torch.randint(0, 9, (2, 6), generator=generator))
        assert torch.equal(flips[row], torch.rand(6, generator=generator) < 0.5)
    late_start, _ = augment_draws(7, 12, 14, 6)
    assert torch.equal(late_start, offsets[2:])


def test_dropout_and_augmentation_training_is_deterministic():
    settings = dict(SETTINGS, dropout=0.3, augment=True, warmup="5it", milestones=["20it"], gamma=0.5)
    states = []
    for _ in range(2):
        model = models.build("lenet_300_100", seed=0, dropout=0.3)
        train(model, None, random_splits(), settings)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_a_short_run_reaches_the_weights_a_long_run_has_at_that_iteration():
    """Late resetting takes theta_k from a k-iteration run (the snapshot stage): it must be
    the dense run's own weights at k, bit for bit."""
    long_model = models.build("lenet_300_100", seed=0)
    result = train(long_model, None, random_splits(), dict(SETTINGS, augment=True, warmup="5it"), capture=(13,))
    short_model = models.build("lenet_300_100", seed=0)
    train(short_model, None, random_splits(), dict(SETTINGS, augment=True, warmup="5it", iterations="13it"))
    theta_k = result.snapshots[13]
    assert all(torch.equal(theta_k[k], v) for k, v in short_model.state_dict().items())


def test_resuming_at_k_continues_the_schedule_and_data_order():
    whole = models.build("lenet_300_100", seed=0)
    result = train(whole, None, random_splits(), SETTINGS, capture=(17,))
    resumed = models.build("lenet_300_100", seed=0)
    resumed.load_state_dict(result.snapshots[17])
    metrics = train(resumed, None, random_splits(), dict(SETTINGS, optimizer="sgd", lr=0.01), start=17).metrics
    assert min(r["iteration"] for r in metrics) == 17 and max(r["iteration"] for r in metrics) == 30
