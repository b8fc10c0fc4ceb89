"""Uncertainty (docs/eip-method §3): helpers against the formulas on hand-made parameters;
the symmetric head's invariance/equivariance, UDD bias forces through the heads, novelty."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.spatial.transform import Rotation

from eip_al.calculator import EIPCalculator
from eip_al.config import UDDConfig
from eip_al.explore.udd import UDDCalculator
from eip_al.model.evaluation import frames_to_graphs
from eip_al.model.head import Evidence, invariant_features
from eip_al.model.neighbors import SpeciesMap, frame_graph
from eip_al.model.uncertainty import (
    aleatoric_covariance,
    aleatoric_variance,
    config_sigma,
    covariance_atom_sigma,
    covariance_components,
    epistemic_covariance,
    epistemic_variance,
)
from tests.model_fixtures import tiny_model, torch_threads, water_box


def test_sigma_definitions() -> None:
    """Paper evidence (per component) and symmetric evidence (per atom + shape) against §3 by hand."""
    nu = torch.tensor([[0.5, 2.0, 1.0], [4.0, 0.25, 1.5]], dtype=torch.float64)
    alpha = torch.tensor([[1.5, 3.0, 2.0], [1.1, 5.0, 2.5]], dtype=torch.float64)
    beta = torch.tensor([[0.2, 1.0, 0.3], [0.05, 2.0, 0.6]], dtype=torch.float64)
    paper = Evidence(nu, alpha, beta)
    comp = covariance_components(epistemic_covariance(paper))
    ale = covariance_components(aleatoric_covariance(paper))
    for i in range(2):
        for c in range(3):
            n, a, b = nu[i, c].item(), alpha[i, c].item(), beta[i, c].item()
            assert comp[i, c].item() == pytest.approx(math.sqrt(b / (n * (a - 1))))
            assert ale[i, c].item() == pytest.approx(math.sqrt(b / (a - 1)))
    atom = covariance_atom_sigma(epistemic_covariance(paper))
    assert atom[0].item() == pytest.approx(math.sqrt(sum(comp[0, c].item() ** 2 for c in range(3))))
    assert config_sigma(atom).item() == pytest.approx(atom.mean().item())
    # epistemic = aleatoric / ν: more evidence (ν) means less model uncertainty
    assert torch.allclose(epistemic_variance(nu, alpha, beta), aleatoric_variance(alpha, beta) / nu)
    shape = torch.tensor([[[2.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.5]]] * 2, dtype=torch.float64)
    sym = Evidence(nu[:, 0], alpha[:, 0], beta[:, 0], shape)
    cov = epistemic_covariance(sym)
    for i in range(2):
        var = beta[i, 0].item() / (nu[i, 0].item() * (alpha[i, 0].item() - 1))
        assert torch.allclose(cov[i], var * shape[i])
        assert covariance_atom_sigma(cov)[i].item() == pytest.approx(math.sqrt(3 * var))  # tr S = 3


def test_config_sigma_per_graph_and_differentiable() -> None:
    atom = torch.tensor([1.0, 3.0, 2.0, 4.0, 6.0], dtype=torch.float64, requires_grad=True)
    batch = torch.tensor([0, 0, 1, 1, 1])
    sig = config_sigma(atom, batch, 2)
    assert sig.tolist() == pytest.approx([2.0, 4.0])
    (grad,) = torch.autograd.grad(sig.sum(), atom)
    assert grad.tolist() == pytest.approx([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3])


# ----------------------------------------------------------------- the heads on a model
@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


def predict(model, atoms: Atoms) -> dict[str, torch.Tensor]:
    g = frame_graph(atoms, SpeciesMap(model.spec.elements), model.spec.cutoff).to("cpu", model.dtype)
    return {k: v.detach() for k, v in model.predict(g).items()}


def triclinic_water(seed: int) -> Atoms:
    atoms = water_box(8, seed=seed)
    atoms.set_cell(atoms.cell.array + np.array([[0, 0, 0], [0.6, 0, 0], [0.3, -0.4, 0]]), scale_atoms=True)
    return atoms


def transformed(atoms: Atoms, seed: int) -> tuple[Atoms, np.ndarray, np.ndarray]:
    """Randomly rotated (cell too), translated and permuted copy; returns (atoms, R, perm)."""
    rng = np.random.default_rng(seed)
    rot = Rotation.random(random_state=seed).as_matrix()
    perm = rng.permutation(len(atoms))
    out = atoms[perm]
    out.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    out.positions = atoms.positions[perm] @ rot.T + rng.normal(scale=3.0, size=3)
    return out, rot, perm


def novelty_fitted(model, seeds=range(20, 26)):
    model.fit_novelty(frames_to_graphs([water_box(8, seed=s) for s in seeds], model))
    assert model.head.novelty.fitted
    return model


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("novelty", [False, True], ids=["plain", "novelty"])
def test_symmetric_head_sigma_invariant_and_covariance_equivariant(seed: int, novelty: bool) -> None:
    """float64, rotation + translation + permutation of a triclinic periodic box: σ_i, ν, α, β
    and the aleatoric norm are invariant to rounding, Σ' = R Σ Rᵀ, S is SPD with trace 3."""
    model = tiny_model(seed)
    if novelty:
        novelty_fitted(model)
    atoms = triclinic_water(seed)
    turned, rot, perm = transformed(atoms, seed)
    a, b = predict(model, atoms), predict(model, turned)
    for key in ("sigma_atom", "nu", "alpha", "beta"):
        assert torch.allclose(b[key], a[key][perm], rtol=1e-11, atol=0), key
    ale_a, ale_b = a["aleatoric_components"].norm(dim=1), b["aleatoric_components"].norm(dim=1)
    assert torch.allclose(ale_b, ale_a[perm], rtol=1e-11, atol=0)
    r = torch.tensor(rot)
    scale = a["covariance"].abs().max()
    assert (b["covariance"] - r @ a["covariance"][perm] @ r.T).abs().max() < 1e-12 * scale
    assert torch.allclose(b["shape"], r @ a["shape"][perm] @ r.T, atol=1e-12)
    assert torch.allclose(a["shape"].diagonal(dim1=-2, dim2=-1).sum(-1), torch.full((len(atoms),), 3.0, dtype=torch.float64))
    assert (torch.linalg.eigvalsh(a["shape"]) > 0).all()
    assert torch.allclose(a["sigma_atom"], a["sigma_components"].norm(dim=1), rtol=1e-12)
    assert torch.allclose(a["covariance"], a["covariance"].transpose(1, 2))
    # the directional part is not trivially isotropic: the components do change with the frame
    assert (b["sigma_components"] - a["sigma_components"][perm]).abs().max() > 1e-3 * a["sigma_components"].mean()


def test_paper_head_keeps_its_per_component_definitions() -> None:
    model = tiny_model(1, head="paper")
    out = predict(model, water_box(8, seed=1))
    assert out["nu"].shape == out["sigma_components"].shape == (24, 3) and "shape" not in out
    expected = torch.sqrt(out["beta"] / (out["nu"] * (out["alpha"] - 1)))
    assert torch.allclose(out["sigma_components"], expected, rtol=1e-12)
    assert torch.allclose(out["sigma_atom"], expected.norm(dim=1), rtol=1e-12)
    assert torch.allclose(out["covariance"], torch.diag_embed(expected**2), rtol=1e-12)


@pytest.mark.parametrize("head", ["symmetric", "symmetric+novelty", "paper"])
def test_udd_bias_force_through_the_head_matches_finite_differences(head: str) -> None:
    """UDD (limiter off): forces_bias = −∂E_bias/∂R through the head (and the novelty term)."""
    model = tiny_model(4, head=head.split("+")[0])
    if head.endswith("novelty"):
        novelty_fitted(model)
    atoms = water_box(8, seed=7)
    atoms.positions[3] += [0.25, -0.15, 0.1]  # a distorted molecule: outside the novelty envelope
    sigma = float(predict(model, atoms)["sigma_config"])  # B = σ: where the bias force is largest
    calc = UDDCalculator(EIPCalculator.from_model(model), UDDConfig(form="kulichenko", A=5.0, B=sigma, limiter=False))
    atoms.calc = calc
    atoms.get_forces()
    res = dict(calc.results)
    assert np.abs(res["forces_bias"]).max() > 1e-4
    if head.endswith("novelty"):
        assert float(model.head.novelty.factor(*_features(model, atoms)).max()) > 1.0
    h = 1e-5
    for i, c in [(0, 0), (3, 1), (5, 2), (17, 0)]:
        e = []
        for sign in (1, -1):
            shifted = atoms.copy()
            shifted.positions[i, c] += sign * h
            shifted.calc = calc
            shifted.get_potential_energy()
            e.append(calc.results["energy_bias"])
        assert res["forces_bias"][i, c] == pytest.approx(-(e[0] - e[1]) / (2 * h), rel=1e-5, abs=1e-8)


def _features(model, atoms: Atoms) -> tuple[torch.Tensor, torch.Tensor]:
    g = frame_graph(atoms, SpeciesMap(model.spec.elements), model.spec.cutoff).to("cpu", model.dtype)
    _, s, v = model.energy_and_features(g, g.positions)
    return invariant_features(s, v).detach(), g.species


def test_novelty_rises_on_an_out_of_distribution_frame() -> None:
    """Fitted on jittered 8-water boxes: unseen boxes of the same kind stay near factor 1, a
    compressed box (cell × 0.8) and a box with stretched O–H bonds get larger σ."""
    model = tiny_model(2)
    before = predict(model, water_box(8, seed=40))["sigma_atom"]
    novelty_fitted(model, seeds=range(20, 40))
    same = predict(model, water_box(8, seed=40))["sigma_atom"]
    factor_id = model.head.novelty.factor(*_features(model, water_box(8, seed=41)))
    assert float(factor_id.median()) == 1.0  # inside the envelope: no change for most atoms
    assert torch.all(same >= before * (1 - 1e-12))  # the factor only ever removes evidence
    squeezed = water_box(8, seed=41)
    squeezed.set_cell(squeezed.cell.array * 0.8, scale_atoms=True)
    stretched = water_box(8, seed=41)
    o = np.where(stretched.numbers == 8)[0]
    for k in o:  # H of each molecule follow their O: move them 40 % further out
        h = [k + 1, k + 2]
        stretched.positions[h] = stretched.positions[k] + 1.4 * (stretched.positions[h] - stretched.positions[k])
    for ood in (squeezed, stretched):
        factor = model.head.novelty.factor(*_features(model, ood))
        assert float(factor.mean()) > 1.5 * float(factor_id.mean())
