"""Evidential head (docs/eip-method §1): ν, α, β per atom and Cartesian component.

Each Cartesian component c of the final vector features v_i[c] ∈ R^F goes through the
same Linear(F,F) → shifted softplus → Linear(F,3), giving raw (α̃, β̃, ν̃);
α = softplus(α̃) + 1 + ε, β = softplus(β̃) + ε, ν = softplus(ν̃) + ε. The mean γ of the
evidential distribution is not an output: it is the conservative force itself.

This head is deliberately per-component, as in the paper, and therefore NOT rotation
equivariant: rotating a structure changes σ_ix, σ_iy, σ_iz individually and the
per-atom norm σ_i only approximately (docs/model.md reports the size of the effect).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

EVIDENCE_EPS = 1e-6  # ε in α, β, ν: keeps them strictly inside their domains


class ShiftedSoftplus(nn.Module):
    """softplus(x) − log 2 (zero at zero, smooth)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x) - math.log(2.0)


class EvidentialHead(nn.Module):
    """Maps vector features (N, 3, F) to (ν, α, β), each of shape (N, 3)."""

    def __init__(self, n_features: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, n_features), ShiftedSoftplus(), nn.Linear(n_features, 3)
        )

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raw = self.net(v)  # (N, 3 components, 3 raw outputs)
        alpha = F.softplus(raw[..., 0]) + 1.0 + EVIDENCE_EPS
        beta = F.softplus(raw[..., 1]) + EVIDENCE_EPS
        nu = F.softplus(raw[..., 2]) + EVIDENCE_EPS
        return nu, alpha, beta
