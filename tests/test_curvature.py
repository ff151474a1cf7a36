import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from lth.nn import curvature, models
from lth.nn.training import Split


@pytest.fixture(autouse=True)
def one_thread():
    """These products are small: a second intra-op thread only waits on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyMLP(models.PrunableModel):
    """10 -> 6 -> 3, tanh (no ReLU kinks: a Hessian without structural zeros): 87 parameters."""
    output_layer = "fc2.weight"

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(10, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


class TinyConvBN(models.PrunableModel):
    """conv 1->2 (3x3), BatchNorm, ReLU, global average pooling, linear 2->3: 47 parameters."""
    output_layer = "fc.weight"

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2), nn.Linear(2, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def tiny_mlp(seed=0):
    torch.manual_seed(seed)
    model = TinyMLP().double()
    g = torch.Generator().manual_seed(seed)
    data = Split(torch.randn(40, 10, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g))
    return model, data


def tiny_conv(seed=0):
    torch.manual_seed(seed)
    model = TinyConvBN()
    g = torch.Generator().manual_seed(seed)
    data = Split(torch.randn(30, 1, 6, 6, generator=g), torch.randint(0, 3, (30,), generator=g))
    with torch.no_grad():  # running statistics away from their initial (0, 1)
        for _ in range(3):
            model(data.x)
    return model, data


def exact_hessian(model, split) -> np.ndarray:
    """The full Hessian of the mean cross-entropy over the flattened parameters, one batch."""
    names = [name for name, _ in model.named_parameters()]
    tensors = [p.detach() for _, p in model.named_parameters()]

    def loss(flat):
        pieces = torch.split(flat, [t.numel() for t in tensors])
        weights = {n: piece.view(t.shape) for n, piece, t in zip(names, pieces, tensors)}
        return F.cross_entropy(functional_call(model, weights, (split.x,)), split.y)
    return torch.autograd.functional.hessian(loss, torch.cat([t.flatten() for t in tensors])).numpy()


def test_lanczos_run_to_n_matches_the_exact_hessian():
    model, data = tiny_mlp()
    exact = np.linalg.eigvalsh(exact_hessian(model, data))
    # batches of 15 (15, 15, 10): each weighted by its size, the whole split's mean
    n, matvec = curvature.hvp_operator(model, None, data, batch=15)
    assert n == exact.size == 87
    result = curvature.lanczos(matvec, n, 3, tolerance=0.0, max_iterations=n)
    assert result["iterations"] == n and result["converged"]
    np.testing.assert_allclose(result["largest"], exact[::-1][:3], rtol=1e-6)
    np.testing.assert_allclose(result["smallest"], exact[0], rtol=1e-6)
    assert exact[0] < 0  # the test does look at negative curvature


def test_mask_restricts_to_the_surviving_coordinates():
    model, data = tiny_mlp(1)
    rng = np.random.default_rng(0)
    mask = {"fc1.weight": rng.random((6, 10)) < 0.6, "fc2.weight": rng.random((3, 6)) < 0.7}
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():  # the pruned network: its pruned weights are 0
        for name, keep in mask.items():
            model.get_parameter(name).mul_(torch.as_tensor(keep, dtype=torch.float64))
    keep = np.concatenate([mask[n].ravel() if n in mask else np.ones(p.numel(), bool)
                           for n, p in model.named_parameters()])
    restricted = exact_hessian(model, data)[np.ix_(keep, keep)]
    n, matvec = curvature.hvp_operator(model, mask, data, batch=15)
    assert n == keep.sum() < 87
    columns = torch.stack([matvec(e) for e in torch.eye(n, dtype=torch.float64)], 1).numpy()
    np.testing.assert_allclose(columns, restricted, rtol=0, atol=1e-12 * np.abs(restricted).max())

    exact = np.linalg.eigvalsh(restricted)
    result = curvature.top_eigenvalues(model, mask, data, k=3, tolerance=0.0, max_iterations=n, batch=15)
    assert result["parameters"] == n and result["iterations"] == n
    np.testing.assert_allclose(result["largest"], exact[::-1][:3], rtol=1e-6)
    np.testing.assert_allclose(result["smallest"], exact[0], rtol=1e-6)

    # dense weights with the same mask: the masked network's Hessian all the same
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(dense[name])
    again = curvature.top_eigenvalues(model, mask, data, k=3, tolerance=0.0, max_iterations=n, batch=15)
    np.testing.assert_allclose(again["largest"] + [again["smallest"]], result["largest"] + [result["smallest"]],
                               rtol=1e-10)


def power_iteration(model, split, iterations=300, tolerance=1e-6) -> float:
    """The largest-magnitude eigenvalue by plain power iteration, its products by
    forward-over-reverse (torch.func.jvp of torch.func.grad), in one batch."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    model.eval()

    def loss(weights):
        return F.cross_entropy(functional_call(model, weights, (split.x,)), split.y)
    g = torch.Generator().manual_seed(1)
    v = {n: torch.randn(p.shape, generator=g) for n, p in params.items()}
    estimate = None
    for _ in range(iterations):
        norm = torch.sqrt(sum((t.double() ** 2).sum() for t in v.values()))
        v = {n: t / norm for n, t in v.items()}
        hv = torch.func.jvp(torch.func.grad(loss), (params,), (v,))[1]
        previous, estimate = estimate, sum((hv[n].double() * v[n].double()).sum() for n in v).item()
        if previous is not None and abs(estimate - previous) <= tolerance * abs(estimate):
            break
        v = hv
    return estimate


# torch.func.jvp's first use loads decompositions with torch.jit.script, deprecated in this torch
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_lenet_converges_early_and_agrees_with_power_iteration(splits):
    model = models.build("lenet_300_100", seed=0)
    data = curvature.subset(splits["train"], 500, 0)
    result = curvature.top_eigenvalues(model, None, data, k=3)
    assert result["parameters"] == 266_610
    assert result["converged"] and result["iterations"] <= 50
    for value, residual in zip(result["largest"], result["residuals"]["largest"]):
        assert residual <= 1e-3 * abs(value)  # the stated tolerance
    assert result["largest"] == sorted(result["largest"], reverse=True)
    assert result["largest"][0] > 0 and result["smallest"] < 0
    np.testing.assert_allclose(result["largest"][0], power_iteration(model, data), rtol=1e-2)


def test_model_state_is_left_as_it_was():
    model, data = tiny_conv()
    model.train()
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask = {"conv.weight": np.arange(18).reshape(2, 1, 3, 3) % 3 > 0}  # prunes nonzero weights
    result = curvature.top_eigenvalues(model, mask, data, k=2, max_iterations=10, batch=7)
    assert np.isfinite(result["largest"]).all()
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert model.training and model.bn.training
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 0.5))
    assert model.conv.weight.grad is None and model.fc.bias.grad is None


def test_two_calls_give_the_same_numbers():
    model, data = tiny_conv(2)
    model.train()  # dropout and BatchNorm in training mode would make the two differ
    first = curvature.top_eigenvalues(model, None, data, k=3, max_iterations=20, batch=7, seed=3)
    second = curvature.top_eigenvalues(model, None, data, k=3, max_iterations=20, batch=7, seed=3)
    assert first == second


def test_repeated_eigenvalues_are_found_when_run_to_n():
    eigenvalues = torch.tensor([5.0, 5.0, 5.0, 2.0, 1.0, 0.0, 0.0, -3.0], dtype=torch.float64)
    result = curvature.lanczos(lambda v: eigenvalues * v, 8, 4, tolerance=0.0, max_iterations=8)
    np.testing.assert_allclose(result["largest"], [5, 5, 5, 2], atol=1e-12)
    np.testing.assert_allclose(result["smallest"], -3, atol=1e-12)
    assert result["converged"] and result["iterations"] == 8


def test_lanczos_stops_at_the_tolerance_or_max_iterations():
    spectrum = torch.cat([torch.tensor([100.0, 50.0, 30.0]), torch.linspace(-1, 1, 997)]).double()
    runs = {scale: curvature.lanczos(lambda v: scale * spectrum * v, 1000, 3) for scale in (1e-4, 1.0, 1e4)}
    for scale, run in runs.items():
        assert run["converged"] and run["iterations"] < 50
        np.testing.assert_allclose(run["largest"], [100 * scale, 50 * scale, 30 * scale], rtol=1e-3)
    # a relative tolerance: H scaled, the same start, the same number of steps
    assert len({run["iterations"] for run in runs.values()}) == 1
    capped = curvature.lanczos(lambda v: spectrum * v, 1000, 3, tolerance=0.0, max_iterations=12)
    assert not capped["converged"] and capped["iterations"] == 12


def test_the_most_negative_eigenvalue_is_part_of_the_stopping_rule():
    """Stopping on the k largest alone left the most negative Ritz value short of H's (it
    is >= it, interlacing); with it in the rule its residual is within tolerance x the
    spectrum's scale, and so is its distance to H's most negative eigenvalue."""
    spectrum = torch.cat([torch.tensor([100.0, 50.0, 30.0, -5.0, -4.5]), torch.linspace(-0.5, 0.5, 995)]).double()
    both = curvature.lanczos(lambda v: spectrum * v, 1000, 3, tolerance=1e-3)
    top_only = curvature.lanczos(lambda v: spectrum * v, 1000, 3, tolerance=1e-3, smallest=False)
    assert both["converged"] and top_only["converged"] and top_only["iterations"] < both["iterations"]
    assert both["residuals"]["smallest"] <= 1e-3 * 100 < top_only["residuals"]["smallest"]
    assert -5 <= both["smallest"] <= -5 + 1e-3 * 100  # interlacing: from above, within the residual
    assert top_only["smallest"] - (-5) > both["smallest"] - (-5)


def test_subset_is_seeded_and_without_replacement():
    split = Split(torch.arange(50, dtype=torch.float32)[:, None], torch.arange(50))
    a, b, c = (curvature.subset(split, 20, seed) for seed in (0, 0, 1))
    assert len(a) == 20 and len(set(a.y.tolist())) == 20
    assert torch.equal(a.x[:, 0].long(), a.y)  # rows stay whole
    assert torch.equal(a.y, b.y) and not torch.equal(a.y, c.y)
    with pytest.raises(ValueError):
        curvature.subset(split, 51, 0)
