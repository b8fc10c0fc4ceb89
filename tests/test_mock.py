"""The mock water force field (q-SPC/Fw + DSF) and the `mock` labeler."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from eip_al.config import MockLabelerConfig
from eip_al.io import FrameError
from eip_al.label.mock import MockLabeler, MockWaterCalculator, WaterFF, water_energy_forces
from eip_al.systems import WATER_HOH_DEG, build_water_box, water_topology


def perturbed_box(n: int, seed: int = 0, scale: float = 0.05) -> Atoms:
    atoms = build_water_box(n, seed=seed)
    atoms.positions += np.random.default_rng(seed).normal(0, scale, atoms.positions.shape)
    return atoms


def monomer(r1: float, r2: float, theta_deg: float, box: float = 30.0) -> Atoms:
    t = np.radians(theta_deg)
    pos = [[0, 0, 0], [r1, 0, 0], [r2 * np.cos(t), r2 * np.sin(t), 0]]
    return Atoms("OH2", positions=np.array(pos) + box / 2, cell=[box] * 3, pbc=True)


# ------------------------------------------------------------------------ force field
@pytest.mark.parametrize("n", [8, 16])  # 8 waters: box (6.2 Å) smaller than the cutoff
def test_forces_match_finite_differences(n: int) -> None:
    atoms = perturbed_box(n, seed=n)
    energy, forces = water_energy_forces(atoms)
    h = 1e-5
    for idx in np.random.default_rng(0).choice(len(atoms), 8, replace=False):
        for k in range(3):
            shifted = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[idx, k] += sign * h
                shifted.append(water_energy_forces(moved)[0])
            assert -(shifted[0] - shifted[1]) / (2 * h) == pytest.approx(forces[idx, k], abs=1e-6)
    assert np.isfinite(energy)


def test_momentum_conserved_and_invariances() -> None:
    atoms = perturbed_box(16)
    energy, forces = water_energy_forces(atoms)
    assert np.abs(forces.sum(axis=0)).max() < 1e-10  # Newton's third law
    # translation, wrapping (splits molecules across the boundary), atom order
    moved = atoms.copy()
    moved.positions += [3.1, -7.4, 12.9]
    moved.wrap()
    e2, f2 = water_energy_forces(moved)
    assert e2 == pytest.approx(energy, abs=1e-9) and np.allclose(f2, forces, atol=1e-9)
    perm = np.random.default_rng(2).permutation(len(atoms))
    e3, f3 = water_energy_forces(atoms[perm])
    assert e3 == pytest.approx(energy, abs=1e-9) and np.allclose(f3, forces[perm], atol=1e-9)


def test_energy_ignores_atom_order_even_for_broken_molecules() -> None:
    """Labels are a function of the configuration: an H moved next to another O (a
    "hopped" proton, as exploration may produce) gets the same energy whichever molecule
    the atom order assigns it to."""
    atoms = build_water_box(8, seed=0)
    partner = atoms.positions[15] - atoms.positions[16]  # O–H vector of molecule 5
    atoms.positions[1] = atoms.positions[15] - partner / np.linalg.norm(partner)  # 1 Å, opposite
    energy, forces = water_energy_forces(atoms)
    perm = np.arange(len(atoms))
    perm[[1, 16]] = perm[[16, 1]]  # still O, H, H order; H 1 now "belongs" to molecule 5
    e2, f2 = water_energy_forces(atoms[perm])
    assert e2 == pytest.approx(energy, abs=1e-9) and np.allclose(f2, forces[perm], atol=1e-9)


@pytest.mark.parametrize(("n", "rep"), [(8, 3), (16, 2)])
def test_periodic_images_match_a_supercell(n: int, rep: int) -> None:
    """Image handling: a supercell has rep³ times the energy and the same forces per copy.

    With 8 waters the box (6.2 Å) is smaller than the cutoff, so molecules interact with
    several images of each other and of themselves; the 3×3×3 supercell (18.7 Å) has none.
    """
    atoms = perturbed_box(n, seed=5)
    energy, forces = water_energy_forces(atoms)
    big = atoms.repeat(rep)
    e_big, f_big = water_energy_forces(big)
    assert e_big == pytest.approx(rep**3 * energy, rel=1e-10, abs=1e-9)
    assert np.allclose(f_big, np.tile(forces, (rep**3, 1)), atol=1e-9)


def test_intramolecular_terms_and_exclusions() -> None:
    """A lone molecule feels only its bonds and angle: zero at the reference geometry."""
    ff = WaterFF()
    energy, forces = water_energy_forces(monomer(ff.r0, ff.r0, WATER_HOH_DEG))
    assert energy == pytest.approx(0.0, abs=1e-12) and np.abs(forces).max() < 1e-10
    r1, r2, theta = 1.05, 0.97, 104.0
    energy, _ = water_energy_forces(monomer(r1, r2, theta))
    expected = (
        0.5 * ff.k_bond * ((r1 - ff.r0) ** 2 + (r2 - ff.r0) ** 2)
        + 0.5 * ff.k_angle * (np.radians(theta) - ff.theta0) ** 2
    )
    assert energy == pytest.approx(expected, rel=1e-12)


def dimer(separation: float) -> Atoms:
    """A linear hydrogen-bonded dimer: the donor's H points at the acceptor's O along x,
    the acceptor's H's point away (bisector along +x, in the xz plane)."""
    donor = monomer(1.0, 1.0, WATER_HOH_DEG, box=40.0)
    half = np.radians(WATER_HOH_DEG) / 2
    o_acc = donor.positions[0] + [separation, 0, 0]
    acc = o_acc + np.array(
        [[0, 0, 0], [np.cos(half), 0, np.sin(half)], [np.cos(half), 0, -np.sin(half)]]
    )
    return donor + Atoms("OH2", positions=acc)


def test_dimer_binding_and_smooth_cutoff() -> None:
    """The hydrogen bond binds by roughly 0.1–0.4 eV near 2.7–3.0 Å (q-SPC/Fw dimer: about
    −0.29 eV), and the interaction fades to exactly zero through the cutoff without jumps."""
    lone = water_energy_forces(dimer(30.0))[0]
    assert lone == pytest.approx(
        2 * water_energy_forces(monomer(1, 1, WATER_HOH_DEG))[0], abs=1e-12
    )
    seps = np.arange(2.5, 3.3, 0.05)
    binding = np.array([water_energy_forces(dimer(s))[0] - lone for s in seps])
    assert -0.4 < binding.min() < -0.1
    assert 2.6 <= seps[np.argmin(binding)] <= 3.0

    ff = WaterFF()
    step = 2e-3
    seps = np.arange(ff.cutoff - 2.0, ff.cutoff + 2.0, step)
    e, slope = [], []
    for s in seps:
        en, f = water_energy_forces(dimer(s))
        e.append(en - lone)
        slope.append(-f[3:, 0].sum())  # dE/d(separation)
    e, slope = np.array(e), np.array(slope)
    # energy differences equal the integrated force (a jump in E or F would break this)
    trapezoid = step * (slope[1:] + slope[:-1]) / 2
    assert np.abs(np.diff(e) - trapezoid).max() < 1e-7
    assert e[-1] == pytest.approx(0.0, abs=1e-12)  # every pair beyond the cutoff


def test_nve_conserves_energy_and_molecules_stay_intact() -> None:
    """2 ps NVE (0.5 fs) of 16 waters after 200 fs of Langevin: the total energy stays within
    1 meV/atom of its start at every sample, and no O–H bond leaves 0.8–1.3 Å."""
    atoms = build_water_box(16, seed=0)
    atoms.calc = MockWaterCalculator()
    rng = np.random.default_rng(0)
    thermalize_momenta(atoms, temperature_K=300, rng=rng)
    Stationary(atoms)
    Langevin(
        atoms, 0.5 * units.fs, temperature_K=300, friction=0.05 / units.fs, fixcm=False, rng=rng
    ).run(400)
    o, h1, h2 = water_topology(atoms)
    energies, bonds = [], []

    def record() -> None:
        energies.append(atoms.get_total_energy())
        pos = atoms.positions  # ASE MD does not wrap: molecules stay whole
        bonds.append(np.linalg.norm(np.concatenate([pos[h1] - pos[o], pos[h2] - pos[o]]), axis=1))

    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    dyn.attach(record, interval=20)
    dyn.run(4000)
    energies = np.array(energies)
    bonds = np.array(bonds)
    drift_per_atom = np.abs(energies - energies[0]).max() / len(atoms)
    assert drift_per_atom < 1e-3, f"energy drift {drift_per_atom * 1e3:.3f} meV/atom"
    assert 0.8 < bonds.min() and bonds.max() < 1.3
    assert 200 < atoms.get_temperature() < 450  # thermalised near 300 K, not heating up


# ------------------------------------------------------------------------ labeler
def label(labeler: MockLabeler, frames: list[Atoms], root: Path) -> list:
    dirs = [root / f"{k:06d}" for k in range(len(frames))]
    for atoms, d in zip(frames, dirs, strict=True):
        labeler.prepare(atoms, d)
    labeler.execute(dirs)
    return [labeler.parse(d, a) for a, d in zip(frames, dirs, strict=True)]


def small_frames(n: int) -> list[Atoms]:
    base = build_water_box(8, seed=0)
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        a = base.copy()
        a.positions += rng.normal(0, 0.03, a.positions.shape)
        out.append(a)
    return out


def test_labels_equal_the_force_field_without_noise(tmp_path) -> None:
    frames = small_frames(3)
    results = label(MockLabeler(), frames, tmp_path)
    for atoms, res in zip(frames, results, strict=True):
        assert res.ok and res.failure_class is None and res.runtime_s >= 0
        energy, forces = water_energy_forces(atoms)
        assert res.energy == pytest.approx(energy, abs=1e-6)  # extxyz keeps 1e-8 Å
        assert np.allclose(res.forces, forces, atol=1e-5)


def test_noise_has_the_configured_size_and_is_reproducible(tmp_path) -> None:
    frames = small_frames(120)
    cfg = MockLabelerConfig(energy_noise_eV=0.02, force_noise_eV_A=0.1, seed=3)
    noisy = label(MockLabeler(cfg), frames, tmp_path / "a")
    clean = [water_energy_forces(a) for a in frames]
    de = np.array([r.energy - c[0] for r, c in zip(noisy, clean, strict=True)])
    df = np.concatenate([r.forces - c[1] for r, c in zip(noisy, clean, strict=True)])
    # tolerances are about 4 standard errors of the estimates
    assert np.std(de) == pytest.approx(0.02, rel=0.25) and abs(de.mean()) < 4 * 0.02 / np.sqrt(
        len(de)
    )
    assert np.std(df) == pytest.approx(0.1, rel=0.04) and abs(df.mean()) < 4 * 0.1 / np.sqrt(
        df.size
    )
    # same seed + same frames in another order → identical labels; another seed → different
    order = np.arange(20)[::-1]
    again = label(MockLabeler(cfg), [frames[i] for i in order], tmp_path / "b")
    for k, i in enumerate(order):
        assert again[k].energy == noisy[i].energy and np.array_equal(
            again[k].forces, noisy[i].forces
        )
    other = label(MockLabeler(cfg.model_copy(update={"seed": 4})), frames[:3], tmp_path / "c")
    assert all(o.energy != n.energy for o, n in zip(other, noisy[:3], strict=True))


def test_failure_injection_rate_and_records(tmp_path) -> None:
    frames = small_frames(150)
    cfg = MockLabelerConfig(failure_rate=0.3, seed=1)
    results = label(MockLabeler(cfg), frames, tmp_path / "a")
    failed = [r for r in results if not r.ok]
    # binomial(150, 0.3): 4 standard deviations is ±22 failures
    assert abs(len(failed) - 45) < 22
    for r in failed:
        assert r.failure_class == "injected" and "failure_rate=0.3" in r.message
        assert r.energy is None and r.forces is None
    # deterministic per frame: the same frames fail again, whatever the job order
    again = label(MockLabeler(cfg), frames[:40][::-1], tmp_path / "b")[::-1]
    assert [r.ok for r in again] == [r.ok for r in results[:40]]
    assert all(
        r.ok
        for r in label(
            MockLabeler(MockLabelerConfig(failure_rate=0.0)), frames[:20], tmp_path / "c"
        )
    )
    assert not any(
        r.ok
        for r in label(
            MockLabeler(MockLabelerConfig(failure_rate=1.0)), frames[:20], tmp_path / "d"
        )
    )


def test_execute_is_idempotent_and_resumes(tmp_path) -> None:
    frames = small_frames(4)
    labeler = MockLabeler()
    results = label(labeler, frames, tmp_path)
    dirs = [tmp_path / f"{k:06d}" for k in range(4)]
    stamps = [os.stat(d / "result.json").st_mtime_ns for d in dirs]
    (dirs[2] / "result.json").unlink()  # as if killed before this job finished
    labeler.execute(dirs)
    assert [os.stat(d / "result.json").st_mtime_ns for d in dirs[:2]] == stamps[:2]
    assert labeler.parse(dirs[2], frames[2]).energy == results[2].energy


def test_parse_reports_job_problems_without_raising(tmp_path) -> None:
    frames = small_frames(2)
    labeler = MockLabeler()
    job = tmp_path / "000000"
    labeler.prepare(frames[0], job)
    res = labeler.parse(job, frames[0])
    assert not res.ok and res.failure_class == "not_run" and res.job_id == "000000"
    labeler.execute([job])
    assert labeler.parse(job, frames[0]).ok
    res = labeler.parse(job, frames[1])  # a different frame than the job was made for
    assert not res.ok and res.failure_class == "inconsistent"
    text = (job / "result.json").read_text()
    (job / "result.json").write_text(text[: len(text) // 2])
    res = labeler.parse(job, frames[0])
    assert not res.ok and res.failure_class == "truncated"


def test_non_water_frame_is_refused_or_a_failed_job(tmp_path) -> None:
    atoms = Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]], cell=[5.6] * 3, pbc=True)
    with pytest.raises(FrameError, match="selected.extxyz: frame 3: the mock labeler models water only"):
        MockLabeler().check_frame(atoms, "selected.extxyz: frame 3")
    MockLabeler().check_frame(build_water_box(4), "fine")
    # a job prepared anyway fails cleanly instead of raising
    (res,) = label(MockLabeler(), [atoms], tmp_path)
    assert not res.ok and res.failure_class == "crashed" and "not a pure water frame" in res.message
    record = json.loads((tmp_path / "000000" / "result.json").read_text())
    assert record["ok"] is False


def test_theory_fingerprint_tracks_what_changes_labels() -> None:
    base = MockLabeler().theory()
    assert base.code == "mock" and base.method == "q-SPC/Fw"
    assert MockLabeler(MockLabelerConfig(failure_rate=0.5, seed=9)).theory().key() == base.key()
    assert MockLabeler(MockLabelerConfig(force_noise_eV_A=0.1)).theory().key() != base.key()
    assert MockLabeler(ff=WaterFF(cutoff=6.0)).theory().key() != base.key()
