"""Feature-space novelty for the symmetric head: a per-element Gaussian of invariant features.

After training, the head's invariant features h_i of the training atoms are summarised per
element by a probabilistic-PCA Gaussian (Tipping & Bishop 1999) of the standardised
features z = (h − μ)/sd: the top r principal directions with their variances λ_k and one
isotropic variance σ²_res for the rest. The squared Mahalanobis distance is

    m²_i = Σ_k t_ik²/λ_k + (‖z_i‖² − Σ_k t_ik²)/σ²_res,   t_ik = p_kᵀ z_i,

and `factor` = max(1, m²_i / m²_ref), with m²_ref the 80th percentile over the training
atoms of that element. The head divides ν by it, so σ_i grows like m_i/m_ref outside the
training envelope and is unchanged inside it. Unfitted (m²_ref = 0) the factor is 1.
Everything is stored as buffers (it travels in the checkpoint's state_dict).
"""

from __future__ import annotations

import torch
from torch import nn

RANK = 16  # r, principal directions per element
REFERENCE_QUANTILE = 0.8  # chosen on the mock valid + 450 K sets (docs/model.md)
VAR_FLOOR = 1e-8  # relative floor on feature variances (constant features)


class FeatureNovelty(nn.Module):
    """Per-element PPCA Gaussian of (N, D) features; `factor(h, species)` ≥ 1."""

    def __init__(self, n_elements: int, n_dims: int, rank: int = RANK):
        super().__init__()
        rank = min(rank, n_dims - 1)
        self.register_buffer("mean", torch.zeros(n_elements, n_dims))
        self.register_buffer("scale", torch.ones(n_elements, n_dims))
        self.register_buffer("basis", torch.zeros(n_elements, n_dims, rank))
        self.register_buffer("inv_var", torch.zeros(n_elements, rank))
        self.register_buffer("inv_res_var", torch.zeros(n_elements))
        self.register_buffer("reference", torch.zeros(n_elements))  # m²_ref; 0 = not fitted

    @property
    def fitted(self) -> bool:
        return bool((self.reference > 0).any())

    def reset(self) -> None:
        """Forget the fitted statistics (factor 1 everywhere)."""
        for buf in (self.mean, self.basis, self.inv_var, self.inv_res_var, self.reference):
            buf.zero_()
        self.scale.fill_(1.0)

    def distance2(self, h: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance m²_i of every atom to its element's Gaussian, (N,)."""
        z = (h - self.mean[species]) / self.scale[species]
        t = torch.einsum("nd,ndr->nr", z, self.basis[species])
        t2 = t * t
        return (t2 * self.inv_var[species]).sum(-1) + ((z * z).sum(-1) - t2.sum(-1)) * self.inv_res_var[species]

    def factor(self, h: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """max(1, m²/m²_ref) per atom (1 for elements without statistics), shape (N,)."""
        if not self.fitted:
            return h.new_ones(h.shape[0])
        ref = self.reference[species]
        ratio = self.distance2(h, species) / torch.where(ref > 0, ref, 1.0)
        return torch.where(ref > 0, ratio.clamp(min=1.0), 1.0)

    @torch.no_grad()
    def fit(self, h: torch.Tensor, species: torch.Tensor) -> None:
        """Fit every element that has more than `rank` + 1 atoms in (h, species); others stay unfitted."""
        self.reset()
        rank = self.basis.shape[-1]
        for e in range(self.mean.shape[0]):
            x = h[species == e].to(torch.float64)
            if x.shape[0] <= rank + 1:
                continue
            mean, sd = x.mean(0), x.std(0)
            sd = torch.clamp(sd, min=VAR_FLOOR**0.5 * float(sd.max()) + 1e-30)
            z = (x - mean) / sd
            eig, vec = torch.linalg.eigh(z.T @ z / (x.shape[0] - 1))  # ascending
            eig, vec = eig.flip(0), vec.flip(1)
            lam = eig[:rank].clamp(min=VAR_FLOOR)
            res = (eig[rank:].sum() / max(eig.shape[0] - rank, 1)).clamp(min=VAR_FLOOR)
            dt = self.mean.dtype
            self.mean[e], self.scale[e], self.basis[e] = mean.to(dt), sd.to(dt), vec[:, :rank].to(dt)
            self.inv_var[e], self.inv_res_var[e] = (1.0 / lam).to(dt), (1.0 / res).to(dt)
            d2 = self.distance2(x.to(dt), torch.full((x.shape[0],), e, device=x.device))
            self.reference[e] = torch.quantile(d2.to(torch.float64), REFERENCE_QUANTILE).to(dt)
