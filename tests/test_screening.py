"""Physical screening: per element-pair minimum distances shared by walkers and selection."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from eip_al.config import CollapseConfig
from eip_al.explore.collapse import CollapseDetector
from eip_al.screening import build_screen, pair_name, smallest_pair_distances
from eip_al.select import unphysical_counts, unphysical_reason
from eip_al.systems import build_water_box


def _water_reference() -> dict[str, float]:
    """Smallest distances of a realistic water box: O–O well above 2.2 Å."""
    return smallest_pair_distances([build_water_box(16, seed=s) for s in range(3)])


def test_pair_names_are_canonical():
    assert pair_name(1, 8) == pair_name(8, 1) == "O-H"
    assert pair_name(8, 8) == "O-O"


def test_learned_limits_from_reference_and_floors():
    ref = {"O-O": 2.46, "O-H": 0.94, "H-H": 1.34}
    screen = build_screen(CollapseConfig(), [8, 1], ref)
    assert screen.thresholds["O-O"] == pytest.approx(0.9 * 2.46)
    assert screen.thresholds["O-O"] > 2.0  # issue: intermolecular O–O < 2.0 Å must be rejected
    assert screen.sources["O-O"] == "learned"
    # nothing learned: covalent floor (0.6 × (0.66 + 0.66)) or the absolute floor
    bare = build_screen(CollapseConfig(), [8, 1], None)
    assert bare.sources["O-O"] == "covalent" and bare.thresholds["O-O"] == pytest.approx(0.6 * 1.32)
    assert bare.thresholds["H-H"] == pytest.approx(0.6)  # 0.6 × 0.62 < min_distance 0.6
    explicit = build_screen(CollapseConfig(min_pair_distance={"H-O": 0.8}), [8, 1], ref)
    assert explicit.thresholds["O-H"] == 0.8 and explicit.sources["O-H"] == "explicit"


@pytest.mark.parametrize(
    ("numbers", "distance", "pair"),
    [((8, 8), 2.0, "O-O"), ((8, 1), 0.8, "O-H"), ((1, 1), 1.1, "H-H")],
)
def test_each_pair_type_is_rejected_below_and_accepted_above(numbers, distance, pair):
    ref = {"O-O": 2.46, "O-H": 0.94, "H-H": 1.34}
    screen = build_screen(CollapseConfig(), [8, 1], ref)
    limit = screen.thresholds[pair]
    for d, bad in ((limit - 0.05, True), (limit + 0.05, False)):
        atoms = Atoms(numbers=numbers, positions=[[0, 0, 0], [d, 0, 0]], cell=[20, 20, 20], pbc=True)
        why = screen.check(atoms)
        assert (why is not None) == bad, (pair, d, why)
        if bad:
            assert why.startswith(f"{pair} {d:.3f} Å <")
    assert distance < limit


def test_periodic_images_count():
    """Two O atoms 8.1 Å apart in a 10 Å box are 1.9 Å apart through the periodic image."""
    screen = build_screen(CollapseConfig(), [8], {"O-O": 2.46})
    atoms = Atoms("O2", positions=[[0.2, 5, 5], [8.3, 5, 5]], cell=[10, 10, 10], pbc=True)
    why = screen.check(atoms)  # image distance 1.9 Å
    assert why is not None and why.startswith("O-O 1.900 Å")
    atoms.pbc = False  # without periodicity the pair is 8.1 Å apart
    assert screen.check(atoms) is None


def test_realistic_water_passes_and_a_squeezed_pair_fails():
    ref = _water_reference()
    assert ref["O-O"] > 2.3
    screen = build_screen(CollapseConfig(), [8, 1], ref)
    box = build_water_box(16, seed=7)
    assert screen.check(box) is None
    # move molecule 1 rigidly so that its O sits 1.9 Å from O of molecule 0
    o = np.flatnonzero(box.numbers == 8)
    shift = box.positions[o[0]] + np.array([1.9, 0, 0]) - box.positions[o[1]]
    mol1 = [o[1], o[1] + 1, o[1] + 2]  # build_water_box writes O, H, H per molecule
    box.positions[mol1] += shift
    why = screen.check(box)
    assert why is not None and "Å <" in why


def test_walker_detector_and_selection_use_the_same_rule():
    ref = {"O-O": 2.46, "O-H": 0.94, "H-H": 1.34}
    cfg = CollapseConfig()
    screen = build_screen(cfg, [8, 1], ref)
    atoms = Atoms("OHHOHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0],
                                       [1.6, 1.2, 0], [2.56, 1.2, 0], [1.36, 2.13, 0]],
                  cell=[12, 12, 12], pbc=True)
    det = CollapseDetector(cfg, atoms, 300.0, screen=screen)
    walker_why = det.geometry(atoms.positions)
    select_why = unphysical_reason(atoms, cfg, screen)
    assert walker_why is not None and walker_why.startswith("min_distance: O-O")
    assert select_why == "unphysical: " + walker_why.removeprefix("min_distance: ")
    assert unphysical_counts([select_why, "", "unphysical: molecule_broken: H atom 3 ..."]) == {
        "O-O": 1, "molecule_broken": 1}


def test_config_refuses_unknown_pair():
    with pytest.raises(ValueError, match="not a pair of element symbols"):
        CollapseConfig(min_pair_distance={"Qq-O": 1.0})


def test_a_contact_just_below_the_limit_reads_as_one():
    """2.2106 < 2.2108 must not print as '2.211 Å < 2.211 Å'."""
    screen = build_screen(CollapseConfig(min_pair_distance={"O-O": 2.2108}), [8], None)
    atoms = Atoms("O2", positions=[[0, 0, 0], [2.2106, 0, 0]], cell=[20, 20, 20], pbc=True)
    why = screen.check(atoms)
    assert why is not None and why.startswith("O-O 2.2106 Å < 2.2108 Å"), why
