"""Real GFN-xTB labels (tblite, extra `xtb`) on small systems: the xtb labeler against
tblite's ASE calculator called directly, GFN1 and GFN2, a molecule and an 8-water periodic
box; forces = −dE/dx by central differences through the generic ase labeler; an SCF that
cannot converge is scf_not_converged; `eip-al label --labeler xtb` end to end; an exported
job run by its run.sh gives the in-process label; one generation of the loop labelled by xTB."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from typer.testing import CliRunner

from eip_al.cli import app
from eip_al.config import LabelerConfig
from eip_al.io import read_frames, write_frames
from eip_al.label import ingest_path, label_file
from eip_al.systems import build_water_box

tblite_ase = pytest.importorskip("tblite.ase")
ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def water() -> Atoms:
    return Atoms("OH2", positions=[[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.77, -0.46]])


def direct(atoms: Atoms, method: str) -> tuple[float, np.ndarray]:
    """tblite's own ASE calculator on the frame, without eip-al."""
    a = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    a.calc = tblite_ase.TBLite(method=method, verbosity=0)
    return a.get_potential_energy(), a.get_forces()


@pytest.mark.parametrize("method", ["GFN2-xTB", "GFN1-xTB"])
def test_xtb_labels_equal_tblite_called_directly(tmp_path: Path, method: str) -> None:
    box = build_water_box(8, seed=0)
    assert box.pbc.all() and len(box) == 24
    write_frames(tmp_path / "in.extxyz", [water(), box])
    res = label_file(tmp_path / "in.extxyz", tmp_path / "out.extxyz",
                     LabelerConfig(kind="xtb", xtb={"method": method}))
    assert res.n_ok == 2 and res.labeler == "xtb"
    assert res.theory.code == "tblite" and res.theory.method == method
    for got in read_frames(tmp_path / "out.extxyz", require_cell=False):
        e, f = direct(got, method)  # the labeled frame's positions: what the job saw
        print(f"{method} {len(got)} atoms pbc={got.pbc.all()}: |dE| = {abs(got.get_potential_energy() - e):.2e} eV, "
              f"max |dF| = {np.abs(got.get_forces() - f).max():.2e} eV/Å")
        assert got.get_potential_energy() == pytest.approx(e, abs=1e-6)
        np.testing.assert_allclose(got.get_forces(), f, rtol=0, atol=1e-6)


def test_ase_labeler_forces_are_minus_the_energy_gradient(tmp_path: Path) -> None:
    """Central differences of the labeled energies (h = 1e-3 Å) against the labeled forces."""
    h, base = 1e-3, water()
    frames = [base]
    for i in range(len(base)):
        for k in range(3):
            for sign in (1, -1):
                a = base.copy()
                a.positions[i, k] += sign * h
                frames.append(a)
    write_frames(tmp_path / "in.extxyz", frames)
    cfg = LabelerConfig(kind="ase", ase={"calculator": "tblite.ase:TBLite",
                                         "kwargs": {"method": "GFN2-xTB", "accuracy": 0.01, "verbosity": 0}})
    res = label_file(tmp_path / "in.extxyz", tmp_path / "out.extxyz", cfg)
    assert res.n_ok == len(frames)
    out = read_frames(tmp_path / "out.extxyz", require_cell=False)
    energies = np.array([a.get_potential_energy() for a in out[1:]]).reshape(len(base), 3, 2)
    fd = -(energies[..., 0] - energies[..., 1]) / (2 * h)
    err = np.abs(fd - out[0].get_forces()).max()
    print(f"finite differences vs labeled forces: max error {err:.2e} eV/Å (|F| max {np.abs(fd).max():.2f})")
    assert err < 1e-3


def test_unconverged_scf_is_its_failure_class_and_the_run_goes_on(tmp_path: Path) -> None:
    write_frames(tmp_path / "in.extxyz", [water(), build_water_box(8, seed=1)])
    res = label_file(tmp_path / "in.extxyz", tmp_path / "out.extxyz",
                     LabelerConfig(kind="xtb", max_failure_fraction=1.0, xtb={"max_iterations": 2}))
    assert res.failures_by_class == {"scf_not_converged": 2} and not res.budget_exceeded
    assert "SCF not converged in 2 cycles" in res.outcomes[0].message


def test_eip_al_label_with_xtb_end_to_end(tmp_path: Path) -> None:
    write_frames(tmp_path / "in.extxyz", [water(), build_water_box(8, seed=2)])
    res = runner.invoke(app, ["label", str(tmp_path / "in.extxyz"), str(tmp_path / "out.extxyz"),
                              "--labeler", "xtb"])
    assert res.exit_code == 0, res.output
    assert "2 labeled frames" in res.output and "GFN2-xTB" in res.output
    frames = read_frames(tmp_path / "out.extxyz", require_cell=False)
    assert [a.info["labeler"] for a in frames] == ["xtb", "xtb"]
    e, _ = direct(frames[1], "GFN2-xTB")
    assert frames[1].get_potential_energy() == pytest.approx(e, abs=1e-6)


def test_exported_xtb_job_run_by_its_script_gives_the_in_process_label(tmp_path: Path) -> None:
    write_frames(tmp_path / "in.extxyz", [build_water_box(8, seed=3)])
    local = label_file(tmp_path / "in.extxyz", tmp_path / "local.extxyz", LabelerConfig(kind="xtb"))
    label_file(tmp_path / "in.extxyz", tmp_path / "exp.extxyz",
               LabelerConfig(kind="xtb", backend="export", xtb={"omp_num_threads": 1}), tmp_path / "work")
    jobs = tmp_path / "work" / "jobs"
    (rel,) = (jobs / "tasks.txt").read_text().split()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the job's Python imports this checkout
    subprocess.run(["bash", str(jobs / rel)], check=True, timeout=120, env=env)
    res = ingest_path(tmp_path / "work")
    assert res.n_ok == 1 and res.theory == local.theory
    (a,), (b,) = read_frames(tmp_path / "exp.extxyz"), read_frames(tmp_path / "local.extxyz")
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=1e-8)


@pytest.mark.slow
def test_mixed_generation_xtb_labels_npt_udd_walker(tmp_path: Path) -> None:
    """A mixed run through the real pipeline: seed and generation 0 of 4 waters labelled by
    GFN2-xTB, explored by an NVT MD walker and an NPT (Berendsen barostat) UDD walker. Every
    label is an xTB label equal to tblite called directly, the theory check passes at merge,
    the NPT walker's density is recorded and the report shows it."""
    from test_flows import assert_generation_complete, tiny_config

    from eip_al import pipeline
    from eip_al.config import config_from_mapping
    from eip_al.rundir import RunDir
    from eip_al.schemas import DatasetManifest, ExplorationSummary, GenerationReport

    data = tiny_config(generations=1)
    data["system"] = {"kind": "water", "n_molecules": 4, "density_g_cm3": 0.9}
    data["seed_data"] = {"n_frames": 6, "equilibration_steps": 40, "stride": 20}
    data["explore"] = {**data["explore"], "walkers": [
        {"kind": "md", "steps": 40, "sample_every": 10},
        {"kind": "udd", "steps": 40, "sample_every": 10, "thermostat": "npt_berendsen", "taup_fs": 100}]}
    data["selection"]["n_select"] = 2
    data["merge"] = {"valid_fraction": 0.2, "test_fraction": 0.2}
    data["labeler"] = {"kind": "xtb", "outlier_force_factor": None, "xtb": {"omp_num_threads": 1}}
    cfg = config_from_mapping(data)
    run = RunDir(tmp_path / "run")
    run.init(cfg)
    seed = pipeline.seed_step(cfg, run)
    assert seed.n_frames == 6 and seed.theory.code == "tblite" and seed.theory.method == "GFN2-xTB"
    pipeline.run_generation(cfg, run, 0)
    n = assert_generation_complete(run, 0, seed.n_frames)
    man = DatasetManifest.load(run.artifact_path(0, "merge"))
    assert man.theory.key() == seed.theory.key() and n > seed.n_frames
    frames = read_frames(run.abs(man.dataset_extxyz))
    assert {a.info["theory"] for a in frames} == {seed.theory.key()}
    for a in frames:  # four GFN2 waters: about 4 × -138 eV
        assert -580.0 < a.get_potential_energy() < -520.0
        e, f = direct(a, "GFN2-xTB")
        assert a.get_potential_energy() == pytest.approx(e, abs=1e-6)
    npt = next(w for w in ExplorationSummary.load(run.artifact_path(0, "explore")).walkers if w.ensemble == "npt")
    assert npt.kind == "udd" and npt.steps_run > 0 and 0.5 < (npt.density_mean or 0) < 1.5
    html = run.abs(GenerationReport.load(run.artifact_path(0, "report")).report_html)
    assert (html.parent / "density.png").is_file() and "Density vs time of the NPT walkers" in html.read_text()
