"""Evidential heads (docs/eip-method §1; docs/model.md): (ν, α, β) and the directional shape.

Two heads, chosen by `model.head` and stored in the checkpoint's spec:

* ``symmetric`` (default): one (ν, α, β) per atom from the invariant features
  h_i = [s_i, ‖v_if‖ for every feature f] (Linear(2F,F) → shifted softplus →
  Linear(F, 4+K)), plus a per-atom SPD shape matrix
  S_i = 3 M_i / tr M_i,  M_i = a_i I + Σ_k w_ik u_ik u_ikᵀ,
  with invariant positive a_i, w_ik from the same MLP and equivariant directions
  u_ik = Σ_f W_kf v_if (no bias). So ν, α, β, σ_i are exactly rotation invariant and
  S_i' = R S_i Rᵀ; tr S_i = 3 keeps σ_i² = tr Σ_i = 3 β/(ν(α−1)) in the paper's units.
* ``paper``: each Cartesian component of v_i through the same Linear(F,F) → shifted
  softplus → Linear(F,3) → (α̃, β̃, ν̃) per atom and component (not rotation equivariant).

α = softplus(α̃) + 1 + ε, β = softplus(β̃) + ε, ν = softplus(ν̃) + ε in both heads. γ (the
mean) is not an output: it is the conservative force itself.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from eip_al.model.novelty import FeatureNovelty
from eip_al.model.painn import NORM_EPS

EVIDENCE_EPS = 1e-6  # ε in α, β, ν, a: keeps them strictly inside their domains
N_DIRECTIONS = 4  # K, equivariant directions in the shape matrix
HeadKind = Literal["symmetric", "paper"]
HEAD_KINDS: tuple[str, ...] = ("symmetric", "paper")


class Evidence(NamedTuple):
    """Evidential parameters of a batch of atoms.

    Paper head: ν, α, β of shape (N, 3), `shape` None (the covariance is diagonal).
    Symmetric head: ν, α, β of shape (N,), `shape` (N, 3, 3) SPD with trace 3.
    """

    nu: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    shape: torch.Tensor | None = None


class ShiftedSoftplus(nn.Module):
    """softplus(x) − log 2 (zero at zero, smooth)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x) - math.log(2.0)


def _positive(raw: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    return F.softplus(raw) + offset + EVIDENCE_EPS


class PaperHead(nn.Module):
    """The paper's per-component head: vector features (N, 3, F) → (ν, α, β), each (N, 3)."""

    def __init__(self, n_features: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, n_features), ShiftedSoftplus(), nn.Linear(n_features, 3)
        )

    def forward(self, s: torch.Tensor, v: torch.Tensor, species: torch.Tensor) -> Evidence:
        raw = self.net(v).to(v.dtype)  # (N, 3 components, 3 raw outputs); .to: autocast (painn.py)
        return Evidence(nu=_positive(raw[..., 2]), alpha=_positive(raw[..., 0], 1.0), beta=_positive(raw[..., 1]))


def invariant_features(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """h_i = [s_i, sqrt(‖v_if‖² + ε) for f = 1..F], shape (N, 2F): exactly rotation invariant."""
    return torch.cat([s, torch.sqrt((v * v).sum(dim=1) + NORM_EPS)], dim=-1)


class SymmetricHead(nn.Module):
    """Rotation-invariant (ν, α, β) per atom and an equivariant SPD shape S_i (module doc).

    `novelty` (fitted after training, docs/model.md) divides ν by its feature-space
    distance factor ≥ 1; unfitted it is the identity.
    """

    def __init__(self, n_features: int, n_elements: int, n_directions: int = N_DIRECTIONS):
        super().__init__()
        self.n_directions = n_directions
        self.net = nn.Sequential(
            nn.Linear(2 * n_features, n_features), ShiftedSoftplus(), nn.Linear(n_features, 4 + n_directions)
        )
        self.directions = nn.Linear(n_features, n_directions, bias=False)  # equivariant: no bias
        self.novelty = FeatureNovelty(n_elements, 2 * n_features)

    def forward(self, s: torch.Tensor, v: torch.Tensor, species: torch.Tensor) -> Evidence:
        h = invariant_features(s, v)
        raw = self.net(h).to(h.dtype)  # evidence and loss in the model dtype under autocast (painn.py)
        nu = _positive(raw[:, 2]) / self.novelty.factor(h, species)
        u = self.directions(v).to(v.dtype)  # (N, 3, K)
        weights = _positive(raw[:, 4:])  # (N, K)
        eye = torch.eye(3, dtype=v.dtype, device=v.device)
        m = _positive(raw[:, 3])[:, None, None] * eye + torch.einsum("nak,nbk,nk->nab", u, u, weights)
        trace = m.diagonal(dim1=-2, dim2=-1).sum(-1)
        return Evidence(nu=nu, alpha=_positive(raw[:, 0], 1.0), beta=_positive(raw[:, 1]),
                        shape=3.0 * m / trace[:, None, None])


def make_head(kind: str, n_features: int, n_elements: int) -> nn.Module:
    """The head of `kind` ('symmetric' or 'paper')."""
    if kind == "symmetric":
        return SymmetricHead(n_features, n_elements)
    if kind == "paper":
        return PaperHead(n_features)
    raise ValueError(f"unknown evidential head {kind!r} (expected one of {', '.join(HEAD_KINDS)})")
