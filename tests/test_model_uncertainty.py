"""Uncertainty helpers (docs/eip-method §3) against the formulas, on hand-made parameters."""

from __future__ import annotations

import math

import pytest
import torch

from eip_al.model.uncertainty import (
    aleatoric_sigma,
    atom_sigma,
    component_sigma,
    config_sigma,
    epistemic_variance,
)


def test_sigma_definitions() -> None:
    nu = torch.tensor([[0.5, 2.0, 1.0], [4.0, 0.25, 1.5]], dtype=torch.float64)
    alpha = torch.tensor([[1.5, 3.0, 2.0], [1.1, 5.0, 2.5]], dtype=torch.float64)
    beta = torch.tensor([[0.2, 1.0, 0.3], [0.05, 2.0, 0.6]], dtype=torch.float64)
    comp = component_sigma(nu, alpha, beta)
    for i in range(2):
        for c in range(3):
            n, a, b = nu[i, c].item(), alpha[i, c].item(), beta[i, c].item()
            assert comp[i, c].item() == pytest.approx(math.sqrt(b / (n * (a - 1))))
            assert aleatoric_sigma(alpha, beta)[i, c].item() == pytest.approx(math.sqrt(b / (a - 1)))
    atom = atom_sigma(comp)
    assert atom[0].item() == pytest.approx(math.sqrt(sum(comp[0, c].item() ** 2 for c in range(3))))
    assert config_sigma(atom).item() == pytest.approx(atom.mean().item())
    # epistemic = aleatoric / ν: more evidence (ν) means less model uncertainty
    assert torch.allclose(epistemic_variance(nu, alpha, beta), aleatoric_sigma(alpha, beta) ** 2 / nu)


def test_config_sigma_per_graph_and_differentiable() -> None:
    atom = torch.tensor([1.0, 3.0, 2.0, 4.0, 6.0], dtype=torch.float64, requires_grad=True)
    batch = torch.tensor([0, 0, 1, 1, 1])
    sig = config_sigma(atom, batch, 2)
    assert sig.tolist() == pytest.approx([2.0, 4.0])
    (grad,) = torch.autograd.grad(sig.sum(), atom)
    assert grad.tolist() == pytest.approx([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3])
