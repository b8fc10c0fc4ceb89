"""Uncertainty from the evidential parameters (docs/eip-method §3).

One definition everywhere (UDD, selection, reports, evaluation):
σ_ic = sqrt(β/(ν(α−1))) per component, σ_i = ‖σ_i·‖₂ per atom, σ = mean_i σ_i per
configuration. Aleatoric: sqrt(β/(α−1)) per component. All functions are differentiable
(UDD differentiates the configuration σ).
"""

from __future__ import annotations

import torch


def epistemic_variance(nu: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """β/(ν(α−1)), elementwise (eV²/Å²)."""
    return beta / (nu * (alpha - 1.0))


def aleatoric_variance(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """β/(α−1), elementwise (eV²/Å²)."""
    return beta / (alpha - 1.0)


def component_sigma(nu: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Epistemic σ_ic per atom and component, shape (N, 3) (eV/Å)."""
    return torch.sqrt(epistemic_variance(nu, alpha, beta))


def aleatoric_sigma(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Aleatoric σ per atom and component, shape (N, 3) (eV/Å)."""
    return torch.sqrt(aleatoric_variance(alpha, beta))


def atom_sigma(components: torch.Tensor) -> torch.Tensor:
    """Per-atom σ_i = ‖(σ_ix, σ_iy, σ_iz)‖₂, shape (N,); compare with ‖F_pred,i − F_ref,i‖₂."""
    return torch.linalg.vector_norm(components, dim=-1)


def config_sigma(atom: torch.Tensor, batch: torch.Tensor | None = None, n_graphs: int = 1) -> torch.Tensor:
    """Per-configuration σ = mean_i σ_i, shape (n_graphs,); `batch` maps atoms to graphs."""
    if batch is None:
        return atom.mean().reshape(1)
    total = atom.new_zeros(n_graphs).index_add(0, batch, atom)
    count = atom.new_zeros(n_graphs).index_add(0, batch, torch.ones_like(atom))
    return total / count
