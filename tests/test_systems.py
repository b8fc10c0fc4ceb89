"""Water box builder, structure loading and water topology recovery."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write
from vesin import NeighborList

from eip_al.config import SystemConfig
from eip_al.io import FrameError
from eip_al.systems import (
    MIN_INTERMOLECULAR_A,
    WATER_HOH_DEG,
    WATER_OH_A,
    build_water_box,
    initial_structure,
    load_structure,
    water_density_g_cm3,
    water_topology,
)


def min_intermolecular_distance(atoms: Atoms) -> float:
    """Smallest distance between atoms of different molecules (atoms ordered O,H,H)."""
    i, j, d = NeighborList(cutoff=4.0, full_list=False).compute(
        atoms.positions, atoms.cell[:], True, "ijd"
    )
    other = (i // 3 != j // 3) | (i == j)  # i == j: a periodic image of the same atom
    return float(d[other].min())


@pytest.mark.parametrize(
    ("n", "density"), [(1, 0.997), (8, 0.997), (16, 0.997), (32, 0.997), (64, 1.1), (96, 0.9)]
)
def test_water_box_geometry_density_and_no_overlaps(n: int, density: float) -> None:
    atoms = build_water_box(n, density, seed=3)
    assert len(atoms) == 3 * n
    assert atoms.get_chemical_symbols() == ["O", "H", "H"] * n
    assert atoms.pbc.all()
    cell = np.asarray(atoms.cell)
    assert np.allclose(cell, np.diag(np.diag(cell))) and np.ptp(np.diag(cell)) == 0  # cubic
    assert water_density_g_cm3(atoms) == pytest.approx(density, rel=1e-9)
    # every molecule whole, at the reference geometry
    pos = atoms.positions.reshape(n, 3, 3)
    d1, d2 = pos[:, 1] - pos[:, 0], pos[:, 2] - pos[:, 0]
    r1, r2 = np.linalg.norm(d1, axis=1), np.linalg.norm(d2, axis=1)
    assert np.allclose(r1, WATER_OH_A) and np.allclose(r2, WATER_OH_A)
    angle = np.degrees(np.arccos(np.einsum("ij,ij->i", d1, d2) / (r1 * r2)))
    assert np.allclose(angle, WATER_HOH_DEG)
    if n > 1:
        assert min_intermolecular_distance(atoms) >= MIN_INTERMOLECULAR_A
        # molecules do not sit on top of each other: each O's nearest other O is far
        o = atoms[::3]
        i, j, d = NeighborList(cutoff=4.0, full_list=False).compute(
            o.positions, o.cell[:], True, "ijd"
        )
        assert d.min() > 2.0


def test_water_box_is_seeded() -> None:
    a, b, c = build_water_box(16, seed=1), build_water_box(16, seed=1), build_water_box(16, seed=2)
    assert np.array_equal(a.positions, b.positions)
    assert not np.allclose(a.positions, c.positions)


def test_water_box_refuses_impossible_density() -> None:
    with pytest.raises(ValueError, match="density too high"):
        build_water_box(32, 3.0)
    with pytest.raises(ValueError, match="n_molecules"):
        build_water_box(0)


def test_topology_of_ordered_shuffled_and_wrapped_frames() -> None:
    atoms = build_water_box(16, seed=0)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    o, h1, h2 = water_topology(atoms)
    assert np.array_equal(o, np.arange(0, 48, 3)) and np.array_equal(h1, o + 1)
    assert np.array_equal(h2, o + 2)

    # shuffled and wrapped (molecules split across the boundary): same molecules found
    perm = np.random.default_rng(1).permutation(len(atoms))
    shuffled = atoms[perm]
    shuffled.wrap()
    so, sh1, sh2 = water_topology(shuffled)
    molecules = {
        (int(perm[a]), frozenset((int(perm[b]), int(perm[c]))))
        for a, b, c in zip(so, sh1, sh2, strict=True)
    }
    expected = {(int(a), frozenset((int(b), int(c)))) for a, b, c in zip(o, h1, h2, strict=True)}
    assert molecules == expected


@pytest.mark.parametrize("formula", ["NaCl", "OH3", "O2H2", "H4O2C"])
def test_topology_rejects_non_water(formula: str) -> None:
    atoms = Atoms(
        formula, positions=np.random.default_rng(0).uniform(0, 5, (len(Atoms(formula)), 3))
    )
    atoms.cell, atoms.pbc = [6, 6, 6], True
    with pytest.raises(ValueError, match="not a pure water frame"):
        water_topology(atoms)


@pytest.mark.parametrize(
    ("name", "fmt"), [("s.extxyz", "extxyz"), ("s.cif", "cif"), ("POSCAR", "vasp")]
)
def test_load_structure_formats(tmp_path, name: str, fmt: str) -> None:
    ref = bulk("Si", "diamond", a=5.43, cubic=True)
    write(tmp_path / name, ref, format=fmt)
    atoms = load_structure(tmp_path / name)
    assert atoms.get_chemical_symbols() == ref.get_chemical_symbols()
    assert np.allclose(atoms.cell, ref.cell, atol=1e-5)
    assert np.allclose(atoms.get_scaled_positions() % 1, ref.get_scaled_positions() % 1, atol=1e-5)


def test_load_structure_falls_back_to_pymatgen(tmp_path) -> None:
    from pymatgen.core import Lattice, Structure

    structure = Structure(Lattice.cubic(4.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    path = tmp_path / "nacl.json"  # pymatgen's JSON; ASE reads .json as its database format
    structure.to(filename=str(path))
    atoms = load_structure(path)
    assert sorted(atoms.get_chemical_symbols()) == ["Cl", "Na"]
    assert atoms.cell.volume == pytest.approx(4.2**3)


def test_load_structure_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FrameError, match="missing.cif: structure file not found"):
        load_structure(tmp_path / "missing.cif")
    junk = tmp_path / "junk.cif"
    junk.write_text("this is not a structure\n")
    with pytest.raises(FrameError, match="junk.cif: cannot read structure"):
        load_structure(junk)
    molecule = tmp_path / "water.xyz"
    write(molecule, Atoms("OH2", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]]), format="xyz")
    with pytest.raises(FrameError, match="water.xyz: frame 0: pbc must be True"):
        load_structure(molecule)


def test_initial_structure(tmp_path) -> None:
    water = initial_structure(SystemConfig(kind="water", n_molecules=8, density_g_cm3=1.0, seed=4))
    assert len(water) == 24 and water_density_g_cm3(water) == pytest.approx(1.0)
    assert np.array_equal(water.positions, build_water_box(8, 1.0, seed=4).positions)
    write(tmp_path / "si.cif", bulk("Si", cubic=True))
    si = initial_structure(SystemConfig(kind="file", structure_file=tmp_path / "si.cif"))
    assert set(si.get_chemical_symbols()) == {"Si"} and len(si) == 8
