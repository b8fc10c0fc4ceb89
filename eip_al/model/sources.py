"""Uncertainty sources behind one interface (docs/model.md, "Uncertainty sources").

`model.uncertainty` chooses the source; each is a model class whose `predict(g, create_graph=,
bias=)` returns energy, forces, sigma_components, sigma_atom, sigma_config,
aleatoric_components, descriptor (+ energy_bias, forces_bias with a bias), σ in eV/Å. The
calculator, walkers (MD, UDD, batched), selection, audit and report use only that contract,
so they never ask which source they hold. A checkpoint names its class by `kind` (absent:
an eIP checkpoint, as every checkpoint before ensembles).

* ``evidential`` (default): `EIPModel`, one PaiNN + evidential head, σ from one pass;
* ``ensemble``: `EnsembleModel`, `model.ensemble_size` head-less PaiNNs trained by the same
  loop with seeds seed … seed+M−1 (M× the training and inference cost), σ from their spread.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from eip_al.model.eip import BiasFn, ModelSpec
from eip_al.model.neighbors import Graph


class UncertaintySource(Protocol):
    """What every consumer of a trained model relies on (`EIPModel`, `EnsembleModel`)."""

    spec: ModelSpec
    training: bool

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def element_energy_dict(self) -> dict[str, float]: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def requires_grad_(self, requires_grad: bool = True) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def predict(
        self, g: Graph, *, create_graph: bool = False, bias: BiasFn | list[BiasFn | None] | None = None,
        stress: bool = False,
    ) -> dict[str, torch.Tensor]: ...
