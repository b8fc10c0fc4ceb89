"""The eIP model (PaiNN backbone + energy readout + evidential head) and its head-less base `PlainPaiNN`.

Energy E = Σ_i scale·MLP(s_i) + Σ_i e_ref(Z_i). The reference energies e_ref are fit by
least squares on the training split (`fit_element_energies`) and added in float64 outside
the network, so absolute DFT energies (tens of keV) lose no precision in float32 models.
Forces F = −∂E/∂R by autograd through edge vectors built from positions and integer cell
shifts. The evidential head (`model.head`: symmetric or paper, eip_al/model/head.py) gives
(ν, α, β) and the directional shape; γ is the force itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from torch import nn

from eip_al.config import ModelConfig
from eip_al.malloc import keep_freed_memory
from eip_al.model.head import HEAD_KINDS, Evidence, SymmetricHead, invariant_features, make_head
from eip_al.model.neighbors import Graph, collate
from eip_al.model.painn import PaiNN
from eip_al.model.uncertainty import (
    aleatoric_covariance,
    config_sigma,
    covariance_atom_sigma,
    covariance_components,
    epistemic_covariance,
)

keep_freed_memory()  # every process that runs a model imports this module (eip_al/malloc.py: why)

BiasFn = Callable[[torch.Tensor, int], torch.Tensor]
"""UDD bias: (differentiable configuration σ, number of atoms) → E_bias (scalar tensor, eV)."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the network: ModelConfig's hyperparameters + elements."""

    n_features: int
    n_interactions: int
    cutoff: float
    n_rbf: int
    elements: tuple[int, ...]  # atomic numbers, in embedding order
    head: str = "symmetric"  # evidential head kind (HEAD_KINDS)

    def __post_init__(self) -> None:
        if self.head not in HEAD_KINDS:
            raise ValueError(f"unknown evidential head {self.head!r} (expected one of {', '.join(HEAD_KINDS)})")

    @classmethod
    def from_config(cls, cfg: ModelConfig, elements: Sequence[int]) -> ModelSpec:
        return cls(
            n_features=cfg.n_features,
            n_interactions=cfg.n_interactions,
            cutoff=float(cfg.cutoff),
            n_rbf=cfg.n_rbf,
            elements=tuple(sorted({int(z) for z in elements})),
            head=cfg.head,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["elements"] = list(self.elements)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        """Inverse of `to_dict`; a spec without `head` (checkpoints before the symmetric head) is 'paper'."""
        return cls(
            n_features=int(d["n_features"]),
            n_interactions=int(d["n_interactions"]),
            cutoff=float(d["cutoff"]),
            n_rbf=int(d["n_rbf"]),
            elements=tuple(int(z) for z in d["elements"]),
            head=str(d.get("head", "paper")),
        )

    @property
    def symbols(self) -> list[str]:
        return [chemical_symbols[z] for z in self.elements]


def fit_element_energies(frames: Sequence[Atoms], elements: Sequence[int]) -> np.ndarray:
    """Per-element reference energies (eV/atom) by least squares of E against composition.

    With a single composition ratio in the data (e.g. only water) the split between
    elements is not identifiable; lstsq then returns the minimum-norm solution, which
    reproduces every training composition equally well.
    """
    elements = list(elements)
    counts = np.zeros((len(frames), len(elements)))
    col = {z: k for k, z in enumerate(elements)}
    for n, atoms in enumerate(frames):
        for z, c in zip(*np.unique(atoms.numbers, return_counts=True), strict=True):
            counts[n, col[int(z)]] = c
    energies = np.array([a.get_potential_energy() for a in frames], dtype=np.float64)
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return solution


class PlainPaiNN(nn.Module):
    """PaiNN backbone + energy readout, no uncertainty head: an ensemble member (eip_al/model/
    ensemble.py) and the base of `EIPModel`. Energy as in the module docstring."""

    def __init__(self, spec: ModelSpec, element_energies: Sequence[float] | None = None):
        super().__init__()
        self.spec = spec
        n_el, nf = len(spec.elements), spec.n_features
        self.backbone = PaiNN(n_el, nf, spec.n_interactions, spec.cutoff, spec.n_rbf)
        self.readout = nn.Sequential(nn.Linear(nf, max(nf // 2, 1)), nn.SiLU(), nn.Linear(max(nf // 2, 1), 1))
        self._init_head()
        self.register_buffer("energy_scale", torch.ones(()))
        ee = np.zeros(n_el) if element_energies is None else np.asarray(element_energies, dtype=np.float64)
        if ee.shape != (n_el,):
            raise ValueError(f"element_energies must have {n_el} entries, got {ee.shape}")
        # float64 on purpose and outside the state_dict: stored explicitly in checkpoints.
        self.element_energies = torch.tensor(ee, dtype=torch.float64)

    def _init_head(self) -> None:
        """Subclasses add their head here (after the readout: parameter init order is part of a seed)."""

    def set_element_energies(self, values: Sequence[float]) -> None:
        self.element_energies = torch.tensor(np.asarray(values, dtype=np.float64))

    def element_energy_dict(self) -> dict[str, float]:
        values = self.element_energies.tolist()
        return {s: float(e) for s, e in zip(self.spec.symbols, values, strict=True)}

    @property
    def dtype(self) -> torch.dtype:
        return self.energy_scale.dtype

    @property
    def device(self) -> torch.device:
        return self.energy_scale.device

    def reference_energy(self, g: Graph) -> torch.Tensor:
        """Σ_i e_ref(Z_i) per graph, float64 (no gradient: it does not depend on positions)."""
        if self.element_energies.device != g.species.device:
            self.element_energies = self.element_energies.to(g.species.device)
        ee = self.element_energies
        return torch.zeros(g.n_graphs, dtype=torch.float64, device=ee.device).index_add(
            0, g.batch, ee[g.species]
        )

    def energy_and_features(
        self, g: Graph, positions: torch.Tensor, cell: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Network energy per graph (without reference energies) and final (s, v): plain PaiNN.
        `cell` (G, 3, 3) replaces `g.cell` (the strained cell of a stress pass)."""
        cell = g.cell if cell is None else cell
        if g.n_graphs == 1:
            shift_vec = g.shifts @ cell[0]
        else:
            shift_vec = torch.einsum("ek,ekl->el", g.shifts, cell[g.batch[g.edge_i]])
        vectors = positions.index_select(0, g.edge_j) - positions.index_select(0, g.edge_i) + shift_vec
        s, v = self.backbone(g.species, vectors, g.edge_i, g.edge_j)
        atomic = self.readout(s).squeeze(-1).to(s.dtype) * self.energy_scale  # .to: autocast (painn.py)
        return atomic.new_zeros(g.n_graphs).index_add(0, g.batch, atomic), s, v

    def predict(self, g: Graph, *, create_graph: bool = False, stress: bool = False) -> dict[str, torch.Tensor]:
        """Energy (G, float64), forces −∂E/∂R (N, 3), descriptor (G, F: mean final scalars)
        and, with `stress`, the stress (G, 3, 3) as in `EIPModel.predict`."""
        sp = StrainPass(g, stress)
        energy_net, scalars, _ = self.energy_and_features(g, sp.positions, sp.cell)
        grads = torch.autograd.grad(energy_net.sum(), sp.leaves, create_graph=create_graph)
        return {"energy": energy_net.to(torch.float64) + self.reference_energy(g), "forces": -grads[0],
                "descriptor": graph_mean(scalars, g), **sp.stress(grads)}


def has_bias(bias: BiasFn | Sequence[BiasFn | None] | None) -> bool:
    """True if `bias` (one for all graphs, or one per graph) biases any graph."""
    return bias is not None and (callable(bias) or any(b is not None for b in bias))


def bias_energies(bias: BiasFn | Sequence[BiasFn | None], sig_g: torch.Tensor, g: Graph) -> torch.Tensor:
    """E_bias(σ_config, N) per graph of `g`, (G,); a None entry of a per-graph sequence is 0."""
    biases = [bias] * g.n_graphs if callable(bias) else list(bias)
    if len(biases) != g.n_graphs:
        raise ValueError(f"{len(biases)} biases for {g.n_graphs} graphs")
    n_atoms = torch.bincount(g.batch, minlength=g.n_graphs).tolist()
    return torch.stack([
        b(sig_g[k], n_atoms[k]).reshape(()) if b is not None else sig_g.new_zeros(())
        for k, b in enumerate(biases)
    ])


class StrainPass:
    """The leaves of one prediction pass: positions and, for a stress pass, a zero symmetric
    strain ε applied to positions and cell (so E, F and σ are unchanged at ε = 0); the stress
    is then (1/V)·∂E/∂ε (eV/Å³, ASE's sign) from the same backward pass."""

    def __init__(self, g: Graph, stress: bool):
        self.leaves = [g.positions.detach().requires_grad_(True)]
        self.positions, self.cell, self.volume = self.leaves[0], None, None
        if stress:
            self.volume = torch.linalg.det(g.cell).abs()
            if bool((self.volume < 1e-6).any()):
                raise ValueError("stress needs a cell of nonzero volume for every frame (periodic in 3D)")
            strain = torch.zeros_like(g.cell).requires_grad_(True)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            self.positions = self.leaves[0] + torch.einsum("ni,nij->nj", self.leaves[0], sym[g.batch])
            self.cell = g.cell + torch.bmm(g.cell, sym)
            self.leaves.append(strain)

    def stress(self, grads: Sequence[torch.Tensor], key: str = "stress") -> dict[str, torch.Tensor]:
        """{key: (1/V)·∂/∂ε} from gradients w.r.t. `leaves` ({} without a stress pass)."""
        return {} if self.volume is None else {key: grads[1] / self.volume.view(-1, 1, 1)}


def graph_mean(per_atom: torch.Tensor, g: Graph) -> torch.Tensor:
    """Mean over each graph's atoms of per-atom rows (N, F) → (G, F)."""
    counts = per_atom.new_zeros(g.n_graphs).index_add(0, g.batch, per_atom.new_ones(len(g.batch)))
    total = per_atom.new_zeros((g.n_graphs, per_atom.shape[1])).index_add(0, g.batch, per_atom)
    return total / counts.unsqueeze(-1)


class EIPModel(PlainPaiNN):
    """PaiNN + energy readout + evidential head. Use `predict` for energies/forces/σ."""

    def _init_head(self) -> None:
        self.head = make_head(self.spec.head, self.spec.n_features, len(self.spec.elements))

    def forward(
        self, g: Graph, positions: torch.Tensor, cell: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Evidence, torch.Tensor]:
        """Network energy per graph (without reference energies), evidence, final scalars."""
        energy, s, v = self.energy_and_features(g, positions, cell)
        return energy, self.head(s, v, g.species), s

    @torch.no_grad()
    def fit_novelty(self, graphs: Sequence[Graph], batch_size: int = 8) -> None:
        """Fit the symmetric head's feature novelty (eip_al/model/novelty.py) on `graphs`
        (the training frames); a no-op for the paper head."""
        if not isinstance(self.head, SymmetricHead):
            return
        feats, species = [], []
        for start in range(0, len(graphs), batch_size):
            g = collate([x.to(self.device, self.dtype) for x in graphs[start:start + batch_size]])
            _, s, v = self.energy_and_features(g, g.positions)
            feats.append(invariant_features(s, v))
            species.append(g.species)
        self.head.novelty.fit(torch.cat(feats), torch.cat(species))

    def predict(
        self,
        g: Graph,
        *,
        create_graph: bool = False,
        bias: BiasFn | Sequence[BiasFn | None] | None = None,
        stress: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Energies, forces, evidential parameters and uncertainties of graph batch `g`.

        `create_graph=True` keeps the force graph for training (forces enter the loss).
        With `bias`, E_bias(σ_config, N) is evaluated per graph and its forces come from
        the same forward pass (no second model evaluation). A sequence gives one bias per
        graph (None: E_bias = 0 for that graph), so batched walker replicas of different
        kinds share one pass.
        `stress=True` adds the stress (1/V)·∂E/∂ε (G,3,3; eV/Å³, ASE's sign) by `StrainPass`
        (one more leaf in the same backward pass), and with a bias also stress_bias,
        (1/V)·∂E_bias/∂ε. Every graph needs a cell of nonzero volume.
        Output keys: energy (G, float64), forces (N,3), nu/alpha/beta ((N,3) paper head,
        (N,) symmetric head), shape (N,3,3; symmetric head only), covariance (N,3,3,
        epistemic Σ_i), sigma_components (N,3), sigma_atom (N,), sigma_config (G,),
        aleatoric_components (N,3), descriptor (G,F); with bias also energy_bias (G,),
        forces_bias (N,3); with stress also stress (G,3,3) (and stress_bias).
        """
        sp = StrainPass(g, stress)
        energy_net, ev, scalars = self.forward(g, sp.positions, sp.cell)
        cov = epistemic_covariance(ev)
        sig_a = covariance_atom_sigma(cov)
        sig_g = config_sigma(sig_a, g.batch, g.n_graphs)
        descriptor = graph_mean(scalars, g)
        result = {
            "energy": energy_net.to(torch.float64) + self.reference_energy(g),
            "nu": ev.nu,
            "alpha": ev.alpha,
            "beta": ev.beta,
            "covariance": cov,
            "sigma_components": covariance_components(cov),
            "sigma_atom": sig_a,
            "sigma_config": sig_g,
            "aleatoric_components": covariance_components(aleatoric_covariance(ev)),
            "descriptor": descriptor,
        }
        if ev.shape is not None:
            result["shape"] = ev.shape
        if not has_bias(bias):
            grads = torch.autograd.grad(energy_net.sum(), sp.leaves, create_graph=create_graph)
            return result | {"forces": -grads[0], **sp.stress(grads)}
        e_bias = bias_energies(bias, sig_g, g)
        # Two vector-Jacobian products over the same graph (retain_graph): measured faster
        # on CPU than one vmap-batched backward (is_grads_batched), same result.
        grads = torch.autograd.grad(energy_net.sum(), sp.leaves, retain_graph=True, create_graph=create_graph)
        grads_bias = torch.autograd.grad(e_bias.sum(), sp.leaves, create_graph=create_graph)
        return result | {"forces": -grads[0], "energy_bias": e_bias, "forces_bias": -grads_bias[0],
                         **sp.stress(grads), **sp.stress(grads_bias, "stress_bias")}
