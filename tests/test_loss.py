"""The evidential loss of docs/eip-method §2 against independent scalar computations."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

from eip_al.model.loss import evidential_nll, evidential_regularizer, force_loss, total_loss
from tests.model_fixtures import torch_threads


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield

# (y, gamma, nu, alpha, beta): residual of both signs, small and large evidence
POINTS = [
    (0.3, -0.1, 0.8, 1.7, 0.4),
    (-1.2, 0.5, 2.5, 3.0, 1.1),
    (0.05, 0.05, 0.1, 1.05, 0.02),
    (2.0, -1.0, 7.0, 12.0, 5.0),
]


def nll_by_hand(y: float, g: float, nu: float, a: float, b: float, q: float) -> float:
    tau = (1 - 2 * q) / (q * (1 - q))
    omega = 2 / (q * (1 - q))
    z = b / (a - 1)
    big = 4 * b * (1 + omega * z * nu)
    return (
        0.5 * math.log(math.pi / nu)
        - a * math.log(big)
        + (a + 0.5) * math.log(nu * (y - g - tau * z) ** 2 + big)
        + math.lgamma(a)
        - math.lgamma(a + 0.5)
    )


def reg_by_hand(y: float, g: float, nu: float, a: float, b: float, q: float) -> float:
    e = y - g
    return max(q * e, (q - 1) * e) * (2 * nu + a + 1 / b)


def as_tensors(point, requires_grad: bool = False) -> list[torch.Tensor]:
    return [torch.tensor(v, dtype=torch.float64, requires_grad=requires_grad) for v in point]


@pytest.mark.parametrize("q", [0.5, 0.6, 0.25])
@pytest.mark.parametrize("point", POINTS)
def test_values_equal_hand_computation(point, q: float) -> None:
    t = as_tensors(point)
    assert evidential_nll(*t, q).item() == pytest.approx(nll_by_hand(*point, q), rel=1e-12, abs=1e-12)
    assert evidential_regularizer(*t, q).item() == pytest.approx(reg_by_hand(*point, q), rel=1e-12)


def test_q_half_has_no_shift() -> None:
    """At q = 0.5, τ = 0: the NLL is symmetric in y − γ."""
    a = evidential_nll(*as_tensors((0.7, 0.0, 1.3, 2.2, 0.5)), 0.5)
    b = evidential_nll(*as_tensors((-0.7, 0.0, 1.3, 2.2, 0.5)), 0.5)
    assert a.item() == pytest.approx(b.item(), rel=1e-14)
    c = evidential_nll(*as_tensors((-0.7, 0.0, 1.3, 2.2, 0.5)), 0.6)
    assert c.item() != pytest.approx(a.item(), rel=1e-3)


@pytest.mark.parametrize("q", [0.5, 0.6])
@pytest.mark.parametrize("point", POINTS[:3])
def test_likelihood_is_a_normalised_density(point, q: float) -> None:
    _, g, nu, a, b = point

    def density(y: float) -> float:
        return math.exp(-nll_by_hand(y, g, nu, a, b, q))

    total, err = quad(density, -math.inf, math.inf, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)
    torch_density = math.exp(-evidential_nll(*as_tensors((0.37, g, nu, a, b)), q).item())
    assert torch_density == pytest.approx(density(0.37), rel=1e-12)


@pytest.mark.parametrize("q", [0.5, 0.6])
def test_gradients_are_finite_and_exact_for_all_inputs(q: float) -> None:
    for point in POINTS:
        inputs = tuple(as_tensors(point, requires_grad=True))
        for fn in (evidential_nll, evidential_regularizer):
            out = fn(*inputs, q)
            grads = torch.autograd.grad(out, inputs)
            assert all(torch.isfinite(gr) for gr in grads)
            assert torch.autograd.gradcheck(lambda *x, fn=fn: fn(*x, q), inputs)
        # no detached term: ν enters NLL through ½ log(π/ν) as well
        nll = evidential_nll(*inputs, q)
        (g_nu,) = torch.autograd.grad(nll, inputs[2])
        assert g_nu.item() != 0.0


def test_bad_quantile_is_rejected() -> None:
    t = as_tensors(POINTS[0])
    for q in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="quantile"):
            evidential_nll(*t, q)
        with pytest.raises(ValueError, match="quantile"):
            evidential_regularizer(*t, q)


def test_total_loss_combines_the_parts() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 5
    y, g = torch.randn(n, 3, generator=gen), torch.randn(n, 3, generator=gen)
    nu, beta = torch.rand(n, 3, generator=gen) + 0.1, torch.rand(n, 3, generator=gen) + 0.1
    alpha = torch.rand(n, 3, generator=gen) + 1.1
    e_ref, e_pred = torch.tensor([1.0, -2.0]), torch.tensor([1.5, -1.0])
    q, lam, w, k = 0.6, 0.1, 0.3, 2.0
    loss, parts = total_loss(y, g, nu, alpha, beta, e_ref, e_pred, q=q, lam=lam, w_energy=w, k_force=k)
    lf = sum(
        sum(
            nll_by_hand(y[i, c].item(), g[i, c].item(), nu[i, c].item(), alpha[i, c].item(), beta[i, c].item(), q)
            + lam * reg_by_hand(y[i, c].item(), g[i, c].item(), nu[i, c].item(), alpha[i, c].item(), beta[i, c].item(), q)
            for i in range(n)
        )
        / n
        for c in range(3)
    )
    assert parts["loss_force"] == pytest.approx(lf, rel=1e-5)
    assert parts["loss_energy"] == pytest.approx(0.75)
    assert loss.item() == pytest.approx(k * lf + w * 0.75, rel=1e-5)
    assert force_loss(y, g, nu, alpha, beta, q, lam).item() == pytest.approx(lf, rel=1e-5)
