"""The simulated system: a generated periodic water box, or a user's structure file.

Water boxes are built with atoms ordered O, H, H per molecule, which is how every part of
eip-al recovers the O–H topology (`water_topology`). For other materials any structure
file ASE reads (extxyz, CIF, POSCAR, ...) is accepted, with pymatgen as a fallback reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_masses
from ase.geometry import find_mic
from ase.io import read
from ase.units import _Nav
from scipy.optimize import linear_sum_assignment
from scipy.spatial.transform import Rotation

from eip_al.config import SystemConfig
from eip_al.io import FrameError, validate_frame

WATER_MASS_G_MOL = float(2 * atomic_masses[1] + atomic_masses[8])  # g/mol, as ASE weighs atoms
WATER_OH_A = 1.0  # Å, q-SPC/Fw equilibrium O–H bond (Paesani et al. 2006)
WATER_HOH_DEG = 112.0  # degrees, q-SPC/Fw equilibrium H–O–H angle
MIN_INTERMOLECULAR_A = 1.6  # Å, the smallest distance allowed between atoms of two molecules
ORDERED_MAX_OH_A = 1.3  # Å, O–H bonds below this in an O,H,H-ordered frame: molecules intact


def water_box_length(n_molecules: int, density_g_cm3: float) -> float:
    """Edge (Å) of the cubic box holding `n_molecules` waters at `density_g_cm3`."""
    volume_cm3 = n_molecules * WATER_MASS_G_MOL / (density_g_cm3 * _Nav)
    return float((volume_cm3 * 1e24) ** (1.0 / 3.0))


def density_g_cm3(mass_amu: float, volume_A3: float) -> float:
    """Mass density (g/cm³) of `mass_amu` in `volume_A3`."""
    return float(mass_amu / _Nav / (volume_A3 * 1e-24))


def water_density_g_cm3(atoms: Atoms) -> float:
    """Mass density (g/cm³) of a periodic frame, from its atomic masses and cell volume."""
    return density_g_cm3(float(atoms.get_masses().sum()), atoms.cell.volume)


def _water_molecule() -> np.ndarray:
    """O, H, H positions (Å) of one water at the q-SPC/Fw equilibrium geometry, O at 0."""
    half = np.radians(WATER_HOH_DEG) / 2
    return np.array(
        [
            [0.0, 0.0, 0.0],
            [WATER_OH_A * np.sin(half), WATER_OH_A * np.cos(half), 0.0],
            [-WATER_OH_A * np.sin(half), WATER_OH_A * np.cos(half), 0.0],
        ]
    )


def _min_image_dist(a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    """Minimum-image distances between points `a` (n, 3) and `b` (m, 3) in a cubic box."""
    d = a[:, None, :] - b[None, :, :]
    d -= length * np.round(d / length)
    return np.linalg.norm(d, axis=-1)


_BASES = {  # fractional sites of one cubic cell, and nearest-neighbour distance / edge
    "sc": (np.zeros((1, 3)), 1.0),
    "bcc": (np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), np.sqrt(3) / 2),
    "fcc": (np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]), 1 / np.sqrt(2)),
}


def _lattice_sites(n_sites: int, length: float) -> np.ndarray:
    """Sites (Å) of the cubic lattice (sc, bcc or fcc) with >= `n_sites` sites in a box of
    edge `length` whose nearest-neighbour distance is largest (most room per molecule)."""
    best: tuple[float, np.ndarray] | None = None
    for basis, nn in _BASES.values():
        n_side = int(np.ceil((n_sites / len(basis)) ** (1.0 / 3.0) - 1e-9))
        spacing = nn * length / n_side
        if best is None or spacing > best[0]:
            grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
            frac = (grid[:, None, :] + basis[None, :, :]).reshape(-1, 3) + 0.25
            best = (spacing, frac * (length / n_side))
    assert best is not None
    return best[1]


def build_water_box(
    n_molecules: int,
    density_g_cm3: float = 0.997,
    seed: int = 0,
    min_distance: float = MIN_INTERMOLECULAR_A,
    n_orientations: int = 64,
) -> Atoms:
    """A cubic periodic box of `n_molecules` rigid-geometry waters at `density_g_cm3`.

    Molecules sit on randomly chosen sites of the roomiest cubic lattice (sc, bcc or
    fcc) with at least `n_molecules` sites; each molecule gets, out of `n_orientations` random
    rotations, the one farthest from the molecules already placed. Atoms are ordered
    O, H, H per molecule and molecules are whole (not wrapped). Raises ValueError if no
    arrangement keeps every intermolecular distance >= `min_distance` (Å), which happens
    only at unphysically high densities.
    """
    if n_molecules < 1:
        raise ValueError(f"n_molecules must be >= 1 (got {n_molecules})")
    if density_g_cm3 <= 0:
        raise ValueError(f"density_g_cm3 must be > 0 (got {density_g_cm3})")
    rng = np.random.default_rng(seed)
    length = water_box_length(n_molecules, density_g_cm3)
    sites = _lattice_sites(n_molecules, length)
    sites = sites[rng.choice(len(sites), n_molecules, replace=False)]
    template = _water_molecule()
    template -= template.mean(axis=0)  # rotate about the geometric centre
    reach = np.linalg.norm(template, axis=1).max()  # atoms lie within `reach` of the site
    placed = np.empty((0, 3))
    for k, site in enumerate(sites):
        rotations = Rotation.random(n_orientations, random_state=rng).as_matrix()
        candidates = site + np.einsum("rij,aj->rai", rotations, template)  # (R, 3, 3)
        near = placed[
            _min_image_dist(site[None], placed, length)[0] < 2 * reach + min_distance + 1.0
        ]
        if len(near):
            closest = _min_image_dist(candidates.reshape(-1, 3), near, length)
            closest = closest.reshape(n_orientations, 3, -1).min(axis=(1, 2))
            best = int(np.argmax(closest))
            if closest[best] < min_distance:
                raise ValueError(
                    f"cannot place water {k} of {n_molecules} at {density_g_cm3} g/cm³ "
                    f"without an intermolecular distance < {min_distance} Å "
                    f"(best {closest[best]:.2f} Å); is the density too high?"
                )
        else:
            best = 0
        placed = np.vstack([placed, candidates[best]])
    return Atoms("OH2" * n_molecules, positions=placed, cell=[length] * 3, pbc=True)


def load_structure(path: Path | str) -> Atoms:
    """The first frame of a periodic structure file (ASE first, then pymatgen).

    Raises FrameError naming the file when it is missing, unreadable by both libraries,
    or not a usable periodic structure.
    """
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"{path}: structure file not found")
    try:
        atoms = read(path, index=0)
    except Exception as ase_exc:  # ASE raises many types for unknown or malformed files
        try:
            from pymatgen.core import Structure
            from pymatgen.io.ase import AseAtomsAdaptor

            atoms = AseAtomsAdaptor.get_atoms(Structure.from_file(path))
        except Exception as pmg_exc:
            raise FrameError(
                f"{path}: cannot read structure (ASE: {type(ase_exc).__name__}: {ase_exc}; "
                f"pymatgen: {type(pmg_exc).__name__}: {pmg_exc})"
            ) from pmg_exc
    atoms.calc = None
    validate_frame(atoms, where=f"{path}: frame 0", require_labels=False, require_cell=True)
    return atoms


def initial_structure(cfg: SystemConfig) -> Atoms:
    """The structure a run starts from, as configured in `system`."""
    if cfg.kind == "water":
        return build_water_box(cfg.n_molecules, cfg.density_g_cm3, seed=cfg.seed)
    assert cfg.structure_file is not None  # guaranteed by SystemConfig's validator
    return load_structure(cfg.structure_file)


def is_water(numbers: np.ndarray | Sequence[int]) -> bool:
    """True for atomic numbers of only O and H, two H per O (water, in any atom order): the
    one water check of the collapse detector's O–H rule and the report's order parameters."""
    numbers = np.asarray(numbers)
    n_o = int(np.count_nonzero(numbers == 8))
    n_h = int(np.count_nonzero(numbers == 1))
    return n_o > 0 and n_h == 2 * n_o and n_o + n_h == len(numbers)


def is_ordered_water(atoms: Atoms) -> bool:
    """True if the atoms are exactly O, H, H repeated (the builder's order)."""
    numbers = atoms.numbers
    return len(numbers) % 3 == 0 and bool(np.all(numbers.reshape(-1, 3) == (8, 1, 1)))


def _mic_vectors(atoms: Atoms, vec: np.ndarray) -> np.ndarray:
    """Minimum-image versions of difference vectors `vec` (..., 3) in the frame's cell."""
    if not atoms.pbc.any():
        return vec
    flat, _ = find_mic(vec.reshape(-1, 3), atoms.cell, atoms.pbc)
    return flat.reshape(vec.shape)


def water_topology(atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (o, h1, h2) of each molecule's oxygen and its two hydrogens.

    The topology is a property of the configuration, not of the atom order: each O gets
    two hydrogens by a minimum-total squared O–H distance assignment (minimum image), so
    relabelling atoms never changes it. Frames in O, H, H order whose every H lies within
    `ORDERED_MAX_OH_A` of its own O (intact molecules: the builder's and every MD frame's
    case) take that order directly, which is what the assignment gives for them, without
    its cost. Raises ValueError if the frame is not made of H2O units only.
    """
    if is_ordered_water(atoms):
        idx = np.arange(len(atoms)).reshape(-1, 3)
        pos = atoms.positions
        bonds = _mic_vectors(
            atoms,
            np.concatenate([pos[idx[:, 1]], pos[idx[:, 2]]]) - np.tile(pos[idx[:, 0]], (2, 1)),
        )
        if np.linalg.norm(bonds, axis=1).max() < ORDERED_MAX_OH_A:
            return idx[:, 0].copy(), idx[:, 1].copy(), idx[:, 2].copy()
    symbols = atoms.get_chemical_symbols()
    o_idx = np.flatnonzero(atoms.numbers == 8)
    h_idx = np.flatnonzero(atoms.numbers == 1)
    if len(o_idx) == 0 or len(o_idx) + len(h_idx) != len(atoms) or len(h_idx) != 2 * len(o_idx):
        counts = {s: symbols.count(s) for s in sorted(set(symbols))}
        raise ValueError(f"not a pure water frame: composition {counts} is not (H2O)n")
    vec = _mic_vectors(
        atoms, atoms.positions[h_idx][None, :, :] - atoms.positions[o_idx][:, None, :]
    )
    cost = np.sum(vec**2, axis=-1)  # (n_O, n_H)
    rows, cols = linear_sum_assignment(np.repeat(cost, 2, axis=0))  # each O twice
    owner = rows // 2
    h_of = np.empty((len(o_idx), 2), dtype=int)
    for o in range(len(o_idx)):
        h_of[o] = np.sort(h_idx[cols[owner == o]])
    return o_idx, h_of[:, 0], h_of[:, 1]
