"""Evidential quantile loss (docs/eip-method §2), exactly as specified: no clamps, no detach.

Per atom i and component c, with y the reference force, γ the predicted force, quantile
q ∈ (0,1), τ = (1−2q)/(q(1−q)), ω = 2/(q(1−q)), z = β/(α−1), Ω = 4β(1 + ωzν):

    NLL = ½ log(π/ν) − α log Ω + (α + ½) log(ν (y − γ − τz)² + Ω) + log Γ(α) − log Γ(α + ½)
    REG = ρ_q(y − γ) · (2ν + α + 1/β),   ρ_q(e) = max(q e, (q − 1) e)

exp(−NLL) is a normalised density in y for every (γ, ν, α, β, q) (a Student-t shifted by
τz): the tests integrate it to 1.
"""

from __future__ import annotations

import math

import torch


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


def total_loss(
    forces_ref: torch.Tensor,
    forces_pred: torch.Tensor,
    nu: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    energy_ref: torch.Tensor,
    energy_pred: torch.Tensor,
    *,
    q: float,
    lam: float,
    w_energy: float,
    k_force: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L = k_F·L_F + w·mean_g |E_pred − E_ref| (total energies, eV); also returns the parts."""
    lf = force_loss(forces_ref, forces_pred, nu, alpha, beta, q, lam)
    le = (energy_pred - energy_ref).abs().mean()
    loss = k_force * lf + w_energy * le
    return loss, {"loss_force": float(lf.detach()), "loss_energy": float(le.detach())}
