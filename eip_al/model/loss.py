"""Evidential quantile loss (docs/eip-method §2), exactly as specified: no clamps, no detach.

Per atom i and component c, with y the reference force, γ the predicted force, quantile
q ∈ (0,1), τ = (1−2q)/(q(1−q)), ω = 2/(q(1−q)), z = β/(α−1), Ω = 4β(1 + ωzν):

    NLL = ½ log(π/ν) − α log Ω + (α + ½) log(ν (y − γ − τz)² + Ω) + log Γ(α) − log Γ(α + ½)
    REG = ρ_q(y − γ) · (2ν + α + 1/β),   ρ_q(e) = max(q e, (q − 1) e)

exp(−NLL) is a normalised density in y for every (γ, ν, α, β, q) (a Student-t shifted by
τz): the tests integrate it to 1. This is the paper head's loss (`force_loss`).

Symmetric head (`symmetric_force_loss`): the same NIG model for the whole force vector
r_i = y_i − γ_i ∈ R³ with one (ν, α, β) per atom and the shape S_i (SPD, tr S = 3):
μ | σ² ~ N(γ, σ² S/ν), σ² ~ Γ⁻¹(α, ·). Its marginal is a 3-variate Student-t (2α
degrees of freedom, scale matrix Ω S/(2αν)), which at d = 1 is the §2 density above:

    NLL_i = 3/2 log(π/ν) − α log Ω + (α + 3/2) log(ν m_i² + Ω) + log Γ(α) − log Γ(α + 3/2)
            + ½ log det S_i,          m_i² = r_iᵀ S_i⁻¹ r_i (Mahalanobis)
    REG_i = ρ_q(‖r_i‖) · (2ν + α + 1/β)

It depends on r only through m² and ‖r‖, so it is exactly rotation invariant when S is
equivariant. q must be 0.5 (τ = 0): τz shifts the centre along a fixed direction, and
there is no frame-independent direction to shift along (the paper head's shift along
each Cartesian axis is what makes its loss frame dependent for q ≠ 0.5).

Energy: L1 per atom, mean_g |E_pred,g − E_ref,g| / N_g, so that w does not grow with the
system size relative to the per-atom force term (docs/defaults.md).
"""

from __future__ import annotations

import math

import torch

from eip_al.model.head import Evidence


def _tau_omega(q: float) -> tuple[float, float]:
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile q must be in (0, 1), got {q}")
    return (1.0 - 2.0 * q) / (q * (1.0 - q)), 2.0 / (q * (1.0 - q))


def evidential_nll(
    y: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, q: float
) -> torch.Tensor:
    """Elementwise negative log-likelihood NLL_ic of the quantile evidential model (§2)."""
    tau, omega = _tau_omega(q)
    z = beta / (alpha - 1.0)
    big_omega = 4.0 * beta * (1.0 + omega * z * nu)
    resid = y - gamma - tau * z
    return (
        0.5 * torch.log(math.pi / nu)
        - alpha * torch.log(big_omega)
        + (alpha + 0.5) * torch.log(nu * resid**2 + big_omega)
        + torch.lgamma(alpha)
        - torch.lgamma(alpha + 0.5)
    )


def pinball(e: torch.Tensor, q: float) -> torch.Tensor:
    """Quantile (pinball) loss ρ_q(e) = max(q e, (q − 1) e), elementwise."""
    return torch.maximum(q * e, (q - 1.0) * e)


def evidential_regularizer(
    y: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, q: float
) -> torch.Tensor:
    """Elementwise evidence regulariser REG_ic = ρ_q(y − γ)·(2ν + α + 1/β) (§2)."""
    _tau_omega(q)
    return pinball(y - gamma, q) * (2.0 * nu + alpha + 1.0 / beta)


def force_loss(
    y: torch.Tensor,
    gamma: torch.Tensor,
    nu: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    q: float,
    lam: float,
) -> torch.Tensor:
    """L_F = Σ_c mean_i (NLL_ic + λ REG_ic) over all atoms of the batch; inputs (N, 3)."""
    per = evidential_nll(y, gamma, nu, alpha, beta, q) + lam * evidential_regularizer(
        y, gamma, nu, alpha, beta, q
    )
    return per.mean(dim=0).sum()


def symmetric_nll(
    r: torch.Tensor, nu: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, shape: torch.Tensor, q: float = 0.5
) -> torch.Tensor:
    """Per-atom NLL_i of the 3-variate evidential model (module doc); r (N, 3), shape (N, 3, 3)."""
    if q != 0.5:
        raise ValueError(f"the symmetric head's loss needs q = 0.5 (τ = 0 keeps it rotation invariant), got q = {q}")
    _, omega = _tau_omega(q)
    z = beta / (alpha - 1.0)
    big_omega = 4.0 * beta * (1.0 + omega * z * nu)
    chol = torch.linalg.cholesky(shape)
    white = torch.linalg.solve_triangular(chol, r.unsqueeze(-1), upper=False).squeeze(-1)
    m2 = (white * white).sum(-1)
    logdet = 2.0 * torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)
    return (
        1.5 * torch.log(math.pi / nu)
        - alpha * torch.log(big_omega)
        + (alpha + 1.5) * torch.log(nu * m2 + big_omega)
        + torch.lgamma(alpha)
        - torch.lgamma(alpha + 1.5)
        + 0.5 * logdet
    )


def symmetric_regularizer(
    r: torch.Tensor, nu: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, q: float = 0.5
) -> torch.Tensor:
    """Per-atom REG_i = ρ_q(‖r_i‖)·(2ν + α + 1/β)."""
    return pinball(torch.linalg.vector_norm(r, dim=-1), q) * (2.0 * nu + alpha + 1.0 / beta)


def evidence_force_loss(y: torch.Tensor, gamma: torch.Tensor, ev: Evidence, q: float, lam: float) -> torch.Tensor:
    """L_F for either head: `force_loss` (paper) or mean_i (NLL_i + λ REG_i) (symmetric)."""
    if ev.shape is None:
        return force_loss(y, gamma, ev.nu, ev.alpha, ev.beta, q, lam)
    r = y - gamma
    per = symmetric_nll(r, ev.nu, ev.alpha, ev.beta, ev.shape, q) + lam * symmetric_regularizer(
        r, ev.nu, ev.alpha, ev.beta, q
    )
    return per.mean()


def total_loss(
    forces_ref: torch.Tensor,
    forces_pred: torch.Tensor,
    evidence: Evidence,
    energy_ref: torch.Tensor,
    energy_pred: torch.Tensor,
    n_atoms: torch.Tensor,
    *,
    q: float,
    lam: float,
    w_energy: float,
    k_force: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L = k_F·L_F + w·mean_g |E_pred − E_ref|/N_g (eV/atom); also returns the parts."""
    lf = evidence_force_loss(forces_ref, forces_pred, evidence, q, lam)
    le = ((energy_pred - energy_ref).abs() / n_atoms).mean()
    loss = k_force * lf + w_energy * le
    return loss, {"loss_force": float(lf.detach()), "loss_energy": float(le.detach())}


MSE_ENERGY_WEIGHT = 1.0  # λ_E of `mse_loss` (the UQ benchmark's baselines and the ensemble members)


def mse_loss(
    f_ref: torch.Tensor, f_pred: torch.Tensor, e_ref: torch.Tensor, e_pred: torch.Tensor, n_atoms: torch.Tensor,
    w_energy: float = MSE_ENERGY_WEIGHT,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The plain MLIP loss of head-less members: mean_{i,c} (F_pred − F_ref)² + λ_E · mean_g ((E_pred − E_ref)/N_g)²."""
    lf = ((f_pred - f_ref) ** 2).mean()
    le = (((e_pred - e_ref) / n_atoms) ** 2).mean()
    return lf + w_energy * le, {"loss_force": float(lf.detach()), "loss_energy": float(le.detach())}
