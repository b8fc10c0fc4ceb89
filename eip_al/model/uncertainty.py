"""Uncertainty from the evidential parameters (docs/eip-method §3).

One definition everywhere (UDD, selection, reports, evaluation): the epistemic covariance
Σ_i (3×3; diagonal with entries β_c/(ν_c(α_c−1)) for the paper head, β/(ν(α−1))·S_i for
the symmetric head), σ_ic = sqrt(Σ_i,cc) per component, σ_i = ‖σ_i·‖₂ = sqrt(tr Σ_i) per
atom, σ = mean_i σ_i per configuration. Aleatoric: the same with β/(α−1). All functions
are differentiable (UDD differentiates the configuration σ).
"""

from __future__ import annotations

import torch

from eip_al.model.head import Evidence


def epistemic_variance(nu: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """β/(ν(α−1)), elementwise (eV²/Å²)."""
    return beta / (nu * (alpha - 1.0))


def aleatoric_variance(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """β/(α−1), elementwise (eV²/Å²)."""
    return beta / (alpha - 1.0)


def config_sigma(atom: torch.Tensor, batch: torch.Tensor | None = None, n_graphs: int = 1) -> torch.Tensor:
    """Per-configuration σ = mean_i σ_i, shape (n_graphs,); `batch` maps atoms to graphs."""
    if batch is None:
        return atom.mean().reshape(1)
    total = atom.new_zeros(n_graphs).index_add(0, batch, atom)
    count = atom.new_zeros(n_graphs).index_add(0, batch, torch.ones_like(atom))
    return total / count


def _covariance(variance: torch.Tensor, shape: torch.Tensor | None) -> torch.Tensor:
    if shape is None:  # paper head: independent components
        return torch.diag_embed(variance)
    return variance[:, None, None] * shape


def epistemic_covariance(ev: Evidence) -> torch.Tensor:
    """Epistemic covariance Σ_i of the force on each atom, (N, 3, 3) (eV²/Å²)."""
    return _covariance(epistemic_variance(ev.nu, ev.alpha, ev.beta), ev.shape)


def aleatoric_covariance(ev: Evidence) -> torch.Tensor:
    """Aleatoric covariance per atom, (N, 3, 3) (eV²/Å²)."""
    return _covariance(aleatoric_variance(ev.alpha, ev.beta), ev.shape)


def covariance_components(cov: torch.Tensor) -> torch.Tensor:
    """Per-component σ_ic = sqrt(Σ_i,cc), (N, 3)."""
    return torch.sqrt(cov.diagonal(dim1=-2, dim2=-1))


def covariance_atom_sigma(cov: torch.Tensor) -> torch.Tensor:
    """Per-atom σ_i = sqrt(tr Σ_i) = ‖(σ_ix, σ_iy, σ_iz)‖₂, (N,): rotation invariant when Σ is equivariant."""
    return torch.sqrt(cov.diagonal(dim1=-2, dim2=-1).sum(-1))
