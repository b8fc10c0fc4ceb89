"""The ensemble uncertainty source: M head-less PaiNNs (`PlainPaiNN`) trained alike with seeds
seed … seed+M−1; their disagreement is the uncertainty (docs/model.md, "Uncertainty sources").

`EnsembleModel.predict` returns the keys of `EIPModel.predict` that the calculator, walkers,
selection, audit and report read, with the same meaning and units (eV/Å):

* energy, forces: member means;
* sigma_components σ_ic: per-component std of the member forces (ddof = 1), sigma_atom
  σ_i = ‖σ_i·‖₂, sigma_config σ = mean_i σ_i (as bench/baselines.spread_sigma);
* aleatoric_components: zeros (an ensemble has no noise estimate: label-noise flags stay off);
* descriptor: member 0's mean final scalars (members' feature spaces are unrelated, so
  their features are not averaged).

UDD bias on σ: σ depends on positions through the member forces, so E_bias(σ) needs the
member forces with `create_graph` and its forces are second derivatives. Chosen over the
member-energy spread (Kulichenko et al.) so that UDD pushes on exactly the σ that selection,
calibration and the audit use; it costs one double backward per member and step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from eip_al.model.eip import (
    BiasFn,
    ModelSpec,
    PlainPaiNN,
    StrainPass,
    bias_energies,
    graph_mean,
    has_bias,
)
from eip_al.model.neighbors import Graph
from eip_al.model.uncertainty import config_sigma


class EnsembleModel(nn.Module):
    """M `PlainPaiNN` members sharing one spec and reference energies; `predict` as `EIPModel`."""

    def __init__(self, members: Sequence[PlainPaiNN]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        if any(m.spec != members[0].spec for m in members):
            raise ValueError("ensemble members must share one model spec")
        self.members = nn.ModuleList(members)
        self.spec: ModelSpec = members[0].spec

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0].dtype

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @property
    def element_energies(self) -> torch.Tensor:
        return self.members[0].element_energies

    def element_energy_dict(self) -> dict[str, float]:
        return self.members[0].element_energy_dict()

    def predict(
        self,
        g: Graph,
        *,
        create_graph: bool = False,
        bias: BiasFn | Sequence[BiasFn | None] | None = None,
        stress: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Energies, forces and σ of graph batch `g` (keys: module docstring); `bias` and
        `stress` as in `EIPModel.predict` (bias forces by autograd through σ; stress = the
        member-mean stress)."""
        biased = has_bias(bias)
        sp = StrainPass(g, stress)
        energies, forces, stresses, scalars = [], [], [], None
        for k, m in enumerate(self.members):
            e_net, s, _ = m.energy_and_features(g, sp.positions, sp.cell)
            # forces w.r.t. the strained positions (not the leaf), so that σ(F) and with it
            # E_bias(σ) change with the strain as they would in a strained cell; the strained
            # positions and cell are shared by the members: keep them for the next
            retain = stress and k < len(self.members) - 1
            grads = torch.autograd.grad(e_net.sum(), [sp.positions, *sp.leaves[1:]], retain_graph=retain or None,
                                        create_graph=create_graph or biased)
            energies.append(e_net.to(torch.float64) + m.reference_energy(g))
            forces.append(-grads[0])
            stresses.append(sp.stress(grads))
            scalars = s if scalars is None else scalars
        f = torch.stack(forces)
        comps = f.std(dim=0, unbiased=True)
        sig_a = torch.linalg.vector_norm(comps, dim=-1)
        sig_g = config_sigma(sig_a, g.batch, g.n_graphs)
        assert scalars is not None
        result = {
            "energy": torch.stack(energies).mean(dim=0),
            "forces": f.mean(dim=0),
            "sigma_components": comps,
            "sigma_atom": sig_a,
            "sigma_config": sig_g,
            "aleatoric_components": torch.zeros_like(comps),
            "descriptor": graph_mean(scalars, g),
        }
        if stress:
            result["stress"] = torch.stack([x["stress"] for x in stresses]).mean(dim=0)
        if not biased:
            return result
        e_bias = bias_energies(bias, sig_g, g)
        grads_bias = torch.autograd.grad(e_bias.sum(), sp.leaves, create_graph=create_graph)
        return result | {"energy_bias": e_bias, "forces_bias": -grads_bias[0], **sp.stress(grads_bias, "stress_bias")}
