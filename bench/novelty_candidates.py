"""Novelty candidates measured beside the shipped one (docs/model.md, BENCHMARKS.md).

The shipped candidate (eip_al/model/novelty.py) divides ν by a per-element PPCA
Mahalanobis factor of the evidential head's invariant features. Measured here, on the same
trained model and with the same σ → σ·√factor rule (σ ∝ ν^{-1/2}, so dividing ν by a factor
multiplies σ by its square root):

* last-layer prediction rigidity (LLPR, Bigi et al., 2024): the energy is linear in the
  readout's hidden activations f_i = SiLU(W s_i + b), so the per-atom rigidity is
  r_i = f_iᵀ (C_e + λI)⁻¹ f_i with C_e = (1/n_e) Σ_{i∈e} f_i f_iᵀ the un-centred covariance
  of element e's training atoms, λ = 10⁻³ · tr(C_e)/H. factor_i = max(1, r_i / r_ref,e),
  r_ref,e the 80th percentile over the training atoms of e (the PPCA rule).

No gradient flows through the factor: it is evaluated after the prediction pass, so the
cost is one extra readout-layer evaluation (a matrix product per atom).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from eip_al.model.eip import EIPModel
from eip_al.model.evaluation import frames_to_graphs, predict_graphs
from eip_al.model.neighbors import Graph, collate
from eip_al.model.novelty import REFERENCE_QUANTILE

RIDGE = 1e-3


@torch.no_grad()
def _last_layer(model: EIPModel, graphs: Sequence[Graph], batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Readout hidden activations (N, H) and species indices (N,) of every atom of `graphs`."""
    feats, species = [], []
    for start in range(0, len(graphs), batch_size):
        g = collate([x.to(model.device, model.dtype) for x in graphs[start:start + batch_size]])
        _, s, _ = model.energy_and_features(g, g.positions)
        feats.append(model.readout[:2](s).to(torch.float64).cpu().numpy())
        species.append(g.species.cpu().numpy())
    return np.concatenate(feats), np.concatenate(species)


class LastLayerRigidity:
    """Per-element LLPR factor fitted on the training frames of `model`."""

    def __init__(self, model: EIPModel, train: Sequence[Atoms]):
        self.model = model
        f, sp = _last_layer(model, frames_to_graphs(train, model))
        self.inv: dict[int, np.ndarray] = {}
        self.ref: dict[int, float] = {}
        for e in np.unique(sp):
            x = f[sp == e]
            c = x.T @ x / len(x)
            c += RIDGE * np.trace(c) / c.shape[0] * np.eye(c.shape[0])
            self.inv[int(e)] = np.linalg.inv(c)
            self.ref[int(e)] = float(np.quantile(self._rigidity(x, int(e)), REFERENCE_QUANTILE))

    def _rigidity(self, x: np.ndarray, e: int) -> np.ndarray:
        return np.einsum("nh,hk,nk->n", x, self.inv[e], x)

    def factor(self, graphs: Sequence[Graph]) -> np.ndarray:
        """max(1, r_i / r_ref) per atom of `graphs`, in atom order."""
        f, sp = _last_layer(self.model, graphs)
        out = np.ones(len(sp))
        for e, ref in self.ref.items():
            mask = sp == e
            if mask.any() and ref > 0:
                out[mask] = np.maximum(1.0, self._rigidity(f[mask], e) / ref)
        return out

    def predict(self, graphs: Sequence[Graph]) -> list[dict]:
        """The model's predictions with σ (per atom, per component, per config) scaled by √factor."""
        preds = predict_graphs(self.model, graphs, batch_size=8)
        scale = np.sqrt(self.factor(graphs))
        start = 0
        for p in preds:
            n = len(np.asarray(p["uncertainty"]))
            k = scale[start:start + n]
            start += n
            p["uncertainty"] = np.asarray(p["uncertainty"]) * k
            p["uncertainty_components"] = np.asarray(p["uncertainty_components"]) * k[:, None]
            p["config_uncertainty"] = float(p["uncertainty"].mean())
        return preds
