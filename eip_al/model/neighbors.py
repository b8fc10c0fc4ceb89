"""Neighbor lists (vesin) and batched graphs for the eIP model.

Edges are stored as integer pairs (i, j) plus integer cell shifts S; the model computes
each edge vector in torch as r_ij = R_j − R_i + S·cell, so forces −∂E/∂R are exact in
periodic cells (no minimum-image assumption: small cells get several images of a pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import vesin
from ase import Atoms
from ase.data import chemical_symbols

from eip_al.io import FrameError
from eip_al.model.errors import ElementError


def _box_and_pbc(atoms: Atoms, where: str) -> tuple[np.ndarray, np.ndarray]:
    pbc = np.asarray(atoms.pbc, dtype=bool)
    box = np.asarray(atoms.cell.array, dtype=np.float64)
    for axis in np.flatnonzero(pbc):
        if np.linalg.norm(box[axis]) < 1e-9:
            raise FrameError(f"{where}: periodic along cell vector {axis} but that vector is zero")
    if not np.all(np.isfinite(atoms.positions)):
        raise FrameError(f"{where}: positions contain NaN or inf")
    return box, pbc


def neighbor_pairs(
    atoms: Atoms, cutoff: float, calculator: vesin.NeighborList | None = None, where: str = "frame"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbor list (i, j, S) of `atoms` within `cutoff` (both directions of each pair).

    `calculator` lets a caller reuse one vesin.NeighborList (and its Verlet skin cache).
    """
    box, pbc = _box_and_pbc(atoms, where)
    nl = calculator or vesin.NeighborList(cutoff=cutoff, full_list=True)
    i, j, s = nl.compute(np.asarray(atoms.positions, dtype=np.float64), box, pbc, "ijS")
    return i.astype(np.int64), j.astype(np.int64), s.astype(np.int64)


class SpeciesMap:
    """Maps atomic numbers to the model's element indices, with a clear error for unknown ones."""

    def __init__(self, elements: Sequence[int]):
        self.elements = tuple(int(z) for z in elements)
        self._lut = np.full(119, -1, dtype=np.int64)
        self._lut[list(self.elements)] = np.arange(len(self.elements))

    def __call__(self, numbers: np.ndarray, where: str = "frame") -> np.ndarray:
        idx = self._lut[np.asarray(numbers, dtype=np.int64)]
        if (idx < 0).any():
            bad = sorted({chemical_symbols[z] for z in np.asarray(numbers)[idx < 0]})
            known = [chemical_symbols[z] for z in self.elements]
            raise ElementError(f"{where}: element(s) {bad} not known to the model (trained on {known})")
        return idx


@dataclass
class Graph:
    """One frame (or several concatenated) as tensors; see `collate`."""

    species: torch.Tensor  # (N,) long, index into the model's element list
    positions: torch.Tensor  # (N, 3)
    cell: torch.Tensor  # (G, 3, 3)
    edge_i: torch.Tensor  # (E,) long, receiving atom
    edge_j: torch.Tensor  # (E,) long, sending atom
    shifts: torch.Tensor  # (E, 3) integer cell shifts as float (same dtype as positions)
    batch: torch.Tensor  # (N,) long, graph index of each atom
    n_graphs: int

    @property
    def n_atoms(self) -> int:
        return int(self.species.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Graph:
        """A copy on `device` with float tensors in `dtype`."""
        return Graph(
            species=self.species.to(device),
            positions=self.positions.to(device, dtype),
            cell=self.cell.to(device, dtype),
            edge_i=self.edge_i.to(device),
            edge_j=self.edge_j.to(device),
            shifts=self.shifts.to(device, dtype),
            batch=self.batch.to(device),
            n_graphs=self.n_graphs,
        )


def frame_graph(
    atoms: Atoms,
    species: SpeciesMap,
    cutoff: float,
    where: str = "frame",
    calculator: vesin.NeighborList | None = None,
) -> Graph:
    """Graph of one frame (float64 on CPU; `Graph.to` moves it)."""
    idx = species(atoms.numbers, where)
    i, j, s = neighbor_pairs(atoms, cutoff, calculator, where)
    n = len(atoms)
    return Graph(
        species=torch.from_numpy(idx),
        positions=torch.tensor(atoms.positions, dtype=torch.float64),
        cell=torch.tensor(atoms.cell.array, dtype=torch.float64).unsqueeze(0),
        edge_i=torch.from_numpy(i),
        edge_j=torch.from_numpy(j),
        shifts=torch.from_numpy(s).to(torch.float64),
        batch=torch.zeros(n, dtype=torch.long),
        n_graphs=1,
    )


def collate(graphs: Sequence[Graph]) -> Graph:
    """Concatenate graphs into one batch (atom indices offset, `batch` = graph index)."""
    if len(graphs) == 1:
        return graphs[0]
    offsets = np.cumsum([0] + [g.n_atoms for g in graphs[:-1]])
    return Graph(
        species=torch.cat([g.species for g in graphs]),
        positions=torch.cat([g.positions for g in graphs]),
        cell=torch.cat([g.cell for g in graphs]),
        edge_i=torch.cat([g.edge_i + int(o) for g, o in zip(graphs, offsets, strict=True)]),
        edge_j=torch.cat([g.edge_j + int(o) for g, o in zip(graphs, offsets, strict=True)]),
        shifts=torch.cat([g.shifts for g in graphs]),
        batch=torch.cat(
            [torch.full((g.n_atoms,), k, dtype=torch.long) for k, g in enumerate(graphs)]
        ),
        n_graphs=len(graphs),
    )
