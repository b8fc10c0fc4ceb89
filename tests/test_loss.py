"""The evidential loss of docs/eip-method §2 against independent scalar computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import quad
from scipy.spatial.transform import Rotation
from scipy.special import gammaln

from eip_al.model.head import Evidence
from eip_al.model.loss import (
    evidence_force_loss,
    evidential_nll,
    evidential_regularizer,
    force_loss,
    symmetric_nll,
    symmetric_regularizer,
    total_loss,
)
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
    n_atoms = torch.tensor([2.0, 4.0])  # per-atom L1: (0.5/2 + 1.0/4) / 2 = 0.25
    q, lam, w, k = 0.6, 0.1, 0.3, 2.0
    loss, parts = total_loss(
        y, g, Evidence(nu, alpha, beta), e_ref, e_pred, n_atoms, q=q, lam=lam, w_energy=w, k_force=k
    )
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
    assert parts["loss_energy"] == pytest.approx(0.25)
    assert loss.item() == pytest.approx(k * lf + w * 0.25, rel=1e-5)
    assert force_loss(y, g, nu, alpha, beta, q, lam).item() == pytest.approx(lf, rel=1e-5)


# ----------------------------------------------------------------- symmetric head's loss
def random_spd_trace3(rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=(3, 3))
    m = a @ a.T + 0.2 * np.eye(3)
    return 3 * m / np.trace(m)


def symmetric_nll_scipy(r: np.ndarray, nu: float, a: float, b: float, shape: np.ndarray) -> float:
    """−log of scipy's multivariate Student-t: 2α dof, scale Ω S/(2αν), Ω = 4β(1 + 8βν/(α−1))."""
    big = 4 * b * (1 + 8 * b / (a - 1) * nu)
    return -stats.multivariate_t(loc=np.zeros(3), shape=big * shape / (2 * a * nu), df=2 * a).logpdf(r)


def symmetric_nll_numpy(r: np.ndarray, nu: float, a: float, b: float, shape: np.ndarray) -> float:
    big = 4 * b * (1 + 8 * b / (a - 1) * nu)
    m2 = r @ np.linalg.solve(shape, r)
    return (1.5 * np.log(np.pi / nu) - a * np.log(big) + (a + 1.5) * np.log(nu * m2 + big)
            + gammaln(a) - gammaln(a + 1.5) + 0.5 * np.log(np.linalg.det(shape)))


def test_symmetric_loss_equals_scipy_multivariate_t_and_numpy() -> None:
    rng = np.random.default_rng(4)
    n = 6
    r = rng.normal(size=(n, 3)) * 0.7
    nu, a, b = rng.uniform(0.1, 5, n), rng.uniform(1.05, 8, n), rng.uniform(0.02, 3, n)
    shape = np.stack([random_spd_trace3(rng) for _ in range(n)])
    t = [torch.tensor(x) for x in (r, nu, a, b, shape)]
    got = symmetric_nll(*t).numpy()
    for i in range(n):
        assert got[i] == pytest.approx(symmetric_nll_scipy(r[i], nu[i], a[i], b[i], shape[i]), rel=1e-10)
        assert got[i] == pytest.approx(symmetric_nll_numpy(r[i], nu[i], a[i], b[i], shape[i]), rel=1e-12)
    reg = symmetric_regularizer(t[0], t[1], t[2], t[3]).numpy()
    assert reg == pytest.approx(0.5 * np.linalg.norm(r, axis=1) * (2 * nu + a + 1 / b), rel=1e-12)
    lam = 0.3
    ev = Evidence(t[1], t[2], t[3], t[4])
    y, gamma = torch.tensor(r) + 1.0, torch.ones(n, 3, dtype=torch.float64)
    assert evidence_force_loss(y, gamma, ev, 0.5, lam).item() == pytest.approx(float(np.mean(got + lam * reg)), rel=1e-12)


def test_one_dimensional_nll_is_the_student_t_the_3d_form_generalises() -> None:
    """d = 1 of the same formula is the §2 NLL at q = 0.5 (a consistency check of the constants)."""
    for y, g, nu, a, b in POINTS:
        big = 4 * b * (1 + 8 * b / (a - 1) * nu)
        one_d = -stats.t(df=2 * a, scale=math.sqrt(big / (2 * a * nu))).logpdf(y - g)
        assert nll_by_hand(y, g, nu, a, b, 0.5) == pytest.approx(one_d, rel=1e-12)


def test_symmetric_loss_is_rotation_invariant_and_differentiable() -> None:
    rng = np.random.default_rng(5)
    r, shape = rng.normal(size=(4, 3)), np.stack([random_spd_trace3(rng) for _ in range(4)])
    nu, a, b = (torch.tensor(rng.uniform(lo, hi, 4)) for lo, hi in ((0.2, 3), (1.2, 5), (0.1, 2)))
    rot = Rotation.random(random_state=1).as_matrix()
    base = symmetric_nll(torch.tensor(r), nu, a, b, torch.tensor(shape))
    turned = symmetric_nll(torch.tensor(r @ rot.T), nu, a, b, torch.tensor(rot @ shape @ rot.T))
    assert torch.allclose(base, turned, rtol=1e-12)
    inputs = tuple(x.clone().requires_grad_(True) for x in (torch.tensor(r), nu, a, b))
    sym = torch.tensor(shape)
    assert torch.autograd.gradcheck(lambda *x: symmetric_nll(*x, sym), inputs)
    assert torch.autograd.gradcheck(lambda *x: symmetric_regularizer(*x), inputs)


def test_symmetric_loss_needs_q_half() -> None:
    t = torch.ones(1, 3, dtype=torch.float64), *(torch.full((1,), 2.0, dtype=torch.float64),) * 3
    with pytest.raises(ValueError, match="q = 0.5"):
        symmetric_nll(*t, torch.eye(3, dtype=torch.float64)[None], q=0.6)
