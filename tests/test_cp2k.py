"""Real CP2K single points (one water molecule, 6 Å box, 200/40 Ry: a few seconds each).

Checks the labels against CP2K's own printout and against finite differences of CP2K
energies, the generated inputs against the installed CP2K's schema, and the SCF retry
on a real unconverged SCF. Skipped where CP2K is not installed, unless
EIP_REQUIRE_CP2K=1 (CI) makes that a failure.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from scipy import constants

from eip_al.config import CP2KConfig, LabelerConfig
from eip_al.io import read_frames
from eip_al.label import label_file
from eip_al.schemas import LabelingResult

pytestmark = pytest.mark.cp2k

ROOT = Path(__file__).resolve().parents[1]
HARTREE_EV = constants.physical_constants["Hartree energy in eV"][0]
BOHR_A = constants.physical_constants["Bohr radius"][0] * 1e10
H = 0.005  # Å, finite-difference step
FD_TOL = 5e-3  # eV/Å; measured |F - FD| ≈ 5e-4 at EPS_SCF 1e-7 (forces here are ~4 eV/Å)
CP2K = dict(cutoff_ry=200, rel_cutoff_ry=40, eps_scf=1e-7, omp_num_threads=1)


def water() -> Atoms:
    """A stretched, bent water: forces of several eV/Å."""
    return Atoms(
        "OH2",
        positions=[[3.0, 3.0, 3.1], [3.95, 3.0, 2.55], [2.24, 3.1, 2.51]],
        cell=np.eye(3) * 6.0,
        pbc=True,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cp2k.psmp") is None:
        if os.environ.get("EIP_REQUIRE_CP2K") == "1":
            pytest.fail(
                "EIP_REQUIRE_CP2K=1 but cp2k.psmp is not installed (apt-get install -y cp2k)"
            )
        pytest.skip("cp2k.psmp not installed (apt-get install -y cp2k)")
    path = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("EIP_AL_CACHE_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def labeled(
    cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, LabelingResult, list[Atoms]]:
    """Three CP2K single points: the water, and H1 moved by ±H along x (two at a time)."""
    tmp = tmp_path_factory.mktemp("cp2k")
    frames = [water()]
    for sign in (1, -1):
        moved = water()
        moved.positions[1, 0] += sign * H
        frames.append(moved)
    write(tmp / "in.extxyz", frames)
    cfg = LabelerConfig(kind="cp2k", n_parallel=2, cp2k=CP2KConfig(**CP2K))
    result = label_file(tmp / "in.extxyz", tmp / "out.extxyz", cfg, tmp / "work")
    return tmp, result, read_frames(tmp / "out.extxyz")


def test_all_single_points_succeed(labeled: tuple[Path, LabelingResult, list[Atoms]]) -> None:
    _, result, out = labeled
    assert [o.status for o in result.outcomes] == ["ok"] * 3, result.outcomes
    assert len(out) == 3
    assert result.theory.method == "PBE-D3" and result.theory.cutoff_ry == 200
    assert {a.info["theory"] for a in out} == {result.theory.key()}


def test_labels_equal_cp2k_printout(labeled: tuple[Path, LabelingResult, list[Atoms]]) -> None:
    """Parsed eV, eV/Å labels = CP2K's printed Hartree, Hartree/Bohr × CODATA (scipy) constants."""
    tmp, _, out = labeled
    text = (tmp / "work" / "jobs" / "000000" / "output.log").read_text()
    e_ha = float(
        re.search(r"ENERGY\| Total FORCE_EVAL \( QS \) energy \[a\.u\.\]:\s+(\S+)", text).group(1)
    )
    # the SCF summary's total energy is printed separately; both must agree
    e_scf = float(re.findall(r"^\s+Total energy:\s+(\S+)", text, re.M)[-1])
    assert e_ha == pytest.approx(e_scf, abs=1e-10)
    block = text.split("ATOMIC FORCES in [a.u.]")[1].split("SUM OF ATOMIC FORCES")[0]
    f_au = np.array(
        [ln.split()[3:6] for ln in block.splitlines() if ln.strip()[:1].isdigit()], dtype=float
    )
    assert out[0].get_potential_energy() == pytest.approx(e_ha * HARTREE_EV, rel=1e-7)
    np.testing.assert_allclose(
        out[0].get_forces(), f_au * HARTREE_EV / BOHR_A, rtol=1e-7, atol=1e-9
    )


def test_forces_match_finite_differences(labeled: tuple[Path, LabelingResult, list[Atoms]]) -> None:
    """F_x(H1) = -(E(x+h) - E(x-h)) / 2h within FD_TOL: checks units, sign and atom order."""
    _, _, out = labeled
    energies = [a.get_potential_energy() for a in out]
    fd = -(energies[1] - energies[2]) / (2 * H)
    force = out[0].get_forces()[1, 0]
    assert abs(force) > 1.0
    assert abs(force - fd) < FD_TOL, (force, fd)


def test_generated_inputs_validate_against_installed_cp2k(
    labeled: tuple[Path, LabelingResult, list[Atoms]],
) -> None:
    """Each job's input parses with cp2k-input-tools against `cp2k.psmp --xml` and holds its frame."""
    from cp2k_input_tools.parser import CP2KInputParser

    from eip_al.label.cp2k import installed_schema

    tmp, _, _ = labeled
    parser = CP2KInputParser(xmlspec=str(installed_schema("cp2k.psmp")))
    for job in sorted((tmp / "work" / "jobs").glob("0*")):
        frame = read_frames(job / "frame.extxyz", require_labels=False)[0]
        with open(job / "input.inp") as fh:
            tree = parser.parse(fh)
        assert tree["+global"]["run_type"] == "energy_force"
        coords = list(parser.coords())
        np.testing.assert_allclose([c[1] for c in coords], frame.positions, atol=1e-9)


def test_unconverged_scf_is_rejected_and_retried(
    labeled: tuple[Path, LabelingResult, list[Atoms]], tmp_path: Path
) -> None:
    """A real CP2K 2023 SCF that stops unconverged (it warns and exits 0 with labels) is not
    accepted; the stronger recipe converges to the same energy as the normal SCF. Runs
    through the MPI launcher (as root Open MPI needs --allow-run-as-root)."""
    _, _, out = labeled
    launcher = []
    if shutil.which("mpirun"):
        launcher = ["mpirun", "-np", "1"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    deck = tmp_path / "short.inp"
    deck.write_text(
        (ROOT / "templates/cp2k/water-pbe-d3.inp").read_text().replace("MAX_SCF 10", "MAX_SCF 1")
    )
    write(tmp_path / "in.extxyz", water())
    cfg = LabelerConfig(
        kind="cp2k",
        cp2k=CP2KConfig(**{**CP2K, "max_scf": 5}, user_input=deck, launcher=launcher),
    )
    result = label_file(tmp_path / "in.extxyz", tmp_path / "out.extxyz", cfg, tmp_path / "work")
    job = tmp_path / "work" / "jobs" / "000000"
    assert "SCF run NOT converged" in (job / "output.log").read_text()
    assert "exit_code=0" in (job / "run.status").read_text()
    assert " ".join(launcher) in (job / "run.sh").read_text()
    assert result.outcomes[0].status == "ok" and result.outcomes[0].attempts == 2
    retried = read_frames(tmp_path / "out.extxyz")[0]
    assert retried.get_potential_energy() == pytest.approx(out[0].get_potential_energy(), abs=1e-5)
    np.testing.assert_allclose(retried.get_forces(), out[0].get_forces(), atol=1e-3)
