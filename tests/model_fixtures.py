"""Small systems and tiny models for the model/loss/train/calculator tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

from eip_al.io import attach_labels
from eip_al.model import EIPModel, ModelSpec

TINY = {"n_features": 16, "n_interactions": 2, "cutoff": 3.5, "n_rbf": 8}


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on `n` threads inside the block. Tests use one: tiny models gain nothing
    from two, and on a shared 2-core machine the OpenMP threads of concurrent test
    processes stall each other (measured 10-100x slower epochs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def water_box(n_molecules: int = 8, box: float = 6.2, seed: int = 0, jitter: float = 0.15) -> Atoms:
    """`n_molecules` randomly oriented H2O on a cubic grid in a periodic cubic box."""
    rng = np.random.default_rng(seed)
    per_side = int(np.ceil(n_molecules ** (1 / 3)))
    atoms = Atoms(cell=[box, box, box], pbc=True)
    sites = [(a, b, c) for a in range(per_side) for b in range(per_side) for c in range(per_side)]
    for site in sites[:n_molecules]:
        m = molecule("H2O")
        m.rotate(rng.uniform(0, 360), rng.normal(size=3))
        m.translate((np.array(site) + 0.5) * box / per_side + rng.normal(size=3) * jitter)
        atoms += m
    return atoms


def tiny_model(
    seed: int = 0, dtype: torch.dtype = torch.float64, init_std: float | None = 0.3, head: str = "symmetric"
) -> EIPModel:
    """A random 16-feature, 2-interaction model with weights large enough to be non-trivial."""
    torch.manual_seed(seed)
    model = EIPModel(ModelSpec(elements=(1, 8), head=head, **TINY))
    if init_std is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, init_std)
    return model.to(dtype)


def harmonic_labels(atoms: Atoms) -> Atoms:
    """Label a water frame with a cheap smooth reference: intramolecular springs (O–H, H–H)
    plus a short-range O–O repulsion (r < 3 Å), minimum image. Gives realistic-scale forces for training tests."""
    pos = atoms.positions
    cell = atoms.cell.array
    inv = np.linalg.inv(cell)
    forces = np.zeros_like(pos)
    energy = 0.0

    def pair(i: int, j: int, k: float, r0: float, repulsive_only: bool = False) -> None:
        nonlocal energy
        d = pos[j] - pos[i]
        d -= np.round(d @ inv) @ cell
        r = np.linalg.norm(d)
        if repulsive_only and r >= r0:
            return
        energy += 0.5 * k * (r - r0) ** 2
        f = k * (r - r0) * d / r
        forces[i] += f
        forces[j] -= f

    oxygens = np.where(atoms.numbers == 8)[0]
    for o in oxygens:
        pair(o, o + 1, 45.0, 0.96)
        pair(o, o + 2, 45.0, 0.96)
        pair(o + 1, o + 2, 4.0, 1.52)
    for a in range(len(oxygens)):
        for b in range(a + 1, len(oxygens)):
            pair(oxygens[a], oxygens[b], 2.0, 3.0, repulsive_only=True)
    return attach_labels(atoms, energy - 430.0 * len(oxygens) - 13.6 * 2 * len(oxygens), forces)


def distorted_water_frames(n: int, seed: int = 0, n_molecules: int = 8, box: float = 6.2) -> list[Atoms]:
    """`n` unlabelled water boxes, every atom displaced by N(0, 0.04 Å) per component."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = water_box(n_molecules, box, seed=int(rng.integers(1 << 30)))
        atoms.positions += rng.normal(scale=0.04, size=atoms.positions.shape)
        frames.append(atoms)
    return frames


def labelled_water_frames(n: int, seed: int = 0, n_molecules: int = 8, box: float = 6.2) -> list[Atoms]:
    """`n` distorted water boxes labelled with `harmonic_labels`."""
    return [harmonic_labels(a) for a in distorted_water_frames(n, seed, n_molecules, box)]
