"""The labeler registry and the generic ASE-calculator labeler (`labeler.kind: ase`), with
ASE's EMT as the calculator (no extra needed): config errors naming the field, failure
classes for a calculator that raises, the job-script path (export, run.sh by hand, ingest),
the serve policy, and xtb's preflight without tblite. Real xTB runs: tests/test_xtb.py."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.calculators.calculator import CalculationFailed, Calculator, SCFError
from ase.calculators.emt import EMT
from typer.testing import CliRunner

from eip_al import config as config_mod
from eip_al.cli import app
from eip_al.config import ConfigError, LabelerConfig, config_from_mapping
from eip_al.io import read_frames, write_frames
from eip_al.label import ingest_path, label_file
from eip_al.label.base import JobResult, Labeler
from eip_al.label.jobs import get_labeler
from eip_al.preflight import preflight
from eip_al.registries import LabelerEntry
from eip_al.schemas import TheoryFingerprint
from eip_al.serving import ParameterError, apply_overrides

ROOT = Path(__file__).resolve().parents[1]
EMT_CFG = {"kind": "ase", "ase": {"calculator": "ase.calculators.emt:EMT"}}
runner = CliRunner()


def molecule_frames() -> list[Atoms]:
    """Small H/O frames EMT can label (EMT has H, C, N, O, Al, Ni, Cu, Pd, Ag, Pt, Au)."""
    rng = np.random.default_rng(0)
    base = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    frames = []
    for _ in range(3):
        a = base.copy()
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        frames.append(a)
    return frames


def emt(atoms: Atoms) -> tuple[float, np.ndarray]:
    a = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    a.calc = EMT()
    return a.get_potential_energy(), a.get_forces()


def test_ase_labels_are_the_calculators(tmp_path: Path) -> None:
    frames = molecule_frames()
    write_frames(tmp_path / "in.extxyz", frames)
    res = label_file(tmp_path / "in.extxyz", tmp_path / "out.extxyz", LabelerConfig(**EMT_CFG))
    assert res.n_ok == 3 and res.labeler == "ase"
    assert res.theory.code == "ase" and res.theory.method == "ase.calculators.emt:EMT"
    for got, src in zip(read_frames(tmp_path / "out.extxyz", require_cell=False), frames, strict=True):
        np.testing.assert_allclose(got.positions, src.positions, atol=1e-7)
        e, f = emt(got)  # the job labels the frame as written (extxyz precision)
        assert got.get_potential_energy() == pytest.approx(e, abs=1e-8)  # extxyz keeps ~8 decimals
        np.testing.assert_allclose(got.get_forces(), f, rtol=0, atol=1e-7)
    # parameters are part of the theory: other kwargs never mix with these labels
    other = get_labeler(LabelerConfig(kind="ase", ase={"calculator": "ase.calculators.emt:EMT",
                                                         "kwargs": {"asap_cutoff": True}}))
    assert other.theory().key() != res.theory.key()


@pytest.mark.parametrize(
    ("calculator", "expect"),
    [
        ("no_such_module_xyz:Calc", "labeler.ase.calculator: cannot import 'no_such_module_xyz:Calc': ModuleNotFoundError: No module named"),
        ("ase.calculators.emt:NoSuchCalc", "labeler.ase.calculator: cannot import 'ase.calculators.emt:NoSuchCalc': "
                                           "module 'ase.calculators.emt' has no 'NoSuchCalc'"),
    ],
)
def test_unimportable_calculator_is_one_config_error(tmp_path: Path, calculator: str, expect: str) -> None:
    cfg = {"name": "x", "labeler": {"kind": "ase", "ase": {"calculator": calculator}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    pre = preflight(path, tmp_path / "run")
    assert [p for p in pre.problems if "labeler" in p] == [p for p in pre.problems if expect in p] != []
    res = runner.invoke(app, ["check", str(path), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code != 0 and expect in res.output and "Traceback" not in res.output
    write_frames(tmp_path / "in.extxyz", molecule_frames()[:1])
    res = runner.invoke(app, ["label", str(tmp_path / "in.extxyz"), str(tmp_path / "out.extxyz"),
                              "--config", str(path)])
    assert res.exit_code == 2 and expect in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out.extxyz.jobs").exists()  # refused before anything was written


def test_malformed_calculator_and_bad_kwargs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"c.yaml: labeler.ase.calculator: must be an import path"):
        config_from_mapping({"labeler": {"kind": "ase", "ase": {"calculator": "os; rm -rf /"}}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"labeler: ase.calculator is required when kind is 'ase'"):
        config_from_mapping({"labeler": {"kind": "ase"}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"labeler.kind: must be one of mock, cp2k, ase, xtb \(got 'orca'\)"):
        config_from_mapping({"labeler": {"kind": "orca"}}, "c.yaml")
    bad = LabelerConfig(kind="ase", ase={"calculator": "fractions:Fraction", "kwargs": {"bogus": 1}})
    with pytest.raises(ConfigError, match=r'labeler.ase.kwargs: fractions:Fraction\({"bogus": 1}\) failed: TypeError'):
        get_labeler(bad)
    with pytest.raises(ConfigError, match=r"labeler.ase.calculator: fractions:Fraction is not an ASE calculator"):
        get_labeler(LabelerConfig(kind="ase", ase={"calculator": "fractions:Fraction"}))


def test_calculator_that_raises_is_a_failure_and_the_run_continues(tmp_path: Path) -> None:
    li = Atoms("Li2", positions=[[0, 0, 0], [0, 0, 2.5]])  # EMT: NotImplementedError
    frames = [molecule_frames()[0], li, molecule_frames()[1]]
    write_frames(tmp_path / "in.extxyz", frames)
    res = label_file(tmp_path / "in.extxyz", tmp_path / "out.extxyz",
                     LabelerConfig(**EMT_CFG, max_failure_fraction=1.0))
    assert [(o.status, o.failure_class) for o in res.outcomes] == [
        ("ok", None), ("failed", "crashed"), ("ok", None)]
    assert "ase.calculators.emt:EMT: NotImplementedError: No EMT-potential for Li" in res.outcomes[1].message
    assert len(read_frames(tmp_path / "out.extxyz", require_cell=False)) == 2
    assert "crashed" in (tmp_path / "out.failures.csv").read_text()


class Raises(Calculator):
    """A calculator that fails the way `error` says (importable as tests' `module:Raises`)."""

    implemented_properties = ["energy", "forces"]
    ERRORS = {
        "scf": lambda: SCFError("no convergence after 50 steps"),
        "tblite": lambda: CalculationFailed("SCF not converged in 2 cycles"),
        "failed": lambda: CalculationFailed("bad geometry"),
        "runtime": lambda: RuntimeError("segfault-ish"),
    }

    def __init__(self, error: str = "scf", **kwargs) -> None:
        super().__init__(**kwargs)
        self.error = error

    def calculate(self, *args, **kwargs) -> None:
        raise self.ERRORS[self.error]()


@pytest.mark.parametrize(("error", "failure_class"), [
    ("scf", "scf_not_converged"), ("tblite", "scf_not_converged"), ("failed", "crashed"), ("runtime", "crashed")])
def test_calculator_errors_map_to_failure_classes(tmp_path: Path, error: str, failure_class: str) -> None:
    write_frames(tmp_path / "in.extxyz", molecule_frames()[:1])
    cfg = LabelerConfig(kind="ase", max_failure_fraction=1.0,
                        ase={"calculator": f"{__name__}:Raises", "kwargs": {"error": error}})
    res = label_file(tmp_path / "in.extxyz", tmp_path / "out.extxyz", cfg)
    assert res.failures_by_class == {failure_class: 1}
    assert res.outcomes[0].message.startswith(f"{__name__}:Raises: ")


def test_exported_ase_jobs_run_by_their_script_give_the_in_process_labels(tmp_path: Path) -> None:
    frames = molecule_frames()
    write_frames(tmp_path / "in.extxyz", frames)
    local = label_file(tmp_path / "in.extxyz", tmp_path / "local.extxyz", LabelerConfig(**EMT_CFG))
    exported = LabelerConfig(kind="ase", backend="export", ase={"calculator": "ase.calculators.emt:EMT",
                                                                "omp_num_threads": 1})
    res = label_file(tmp_path / "in.extxyz", tmp_path / "exp.extxyz", exported, tmp_path / "work")
    assert res.failures_by_class == {"not_run": 3}
    jobs = tmp_path / "work" / "jobs"
    tasks = (jobs / "tasks.txt").read_text().split()
    job = (jobs / tasks[0]).parent
    script = (job / "run.sh").read_text()
    assert "export OMP_NUM_THREADS=1" in script
    assert f"{shlex.join([os.sys.executable, '-m', 'eip_al.label.job'])} >stdout.log" in script
    assert json.loads((job / "job.json").read_text())["kind"] == "ase"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the job's Python imports this checkout
    for rel in tasks:
        subprocess.run(["bash", str(jobs / rel)], check=True, timeout=120, cwd=tmp_path, env=env)
    got = ingest_path(tmp_path / "work")
    assert got.n_ok == 3 and got.theory == local.theory
    exp, loc = (read_frames(tmp_path / f, require_cell=False) for f in ("exp.extxyz", "local.extxyz"))
    for a, b in zip(exp, loc, strict=True):
        assert a.get_potential_energy() == b.get_potential_energy()
        np.testing.assert_array_equal(a.get_forces(), b.get_forces())


def test_job_module_refuses_a_bad_job_file(tmp_path: Path, capsys) -> None:
    from eip_al.label import job

    assert job.main([str(tmp_path)]) == 2
    assert f"eip-al job {tmp_path}: cannot read job.json" in capsys.readouterr().err
    (tmp_path / "job.json").write_text('{"frame_id": "00", "kind": "ase", "ase": {"calculator": "nope_xyz:C"}}')
    assert job.main([str(tmp_path)]) == 2
    assert "labeler.ase.calculator: cannot import 'nope_xyz:C'" in capsys.readouterr().err


class DummyLabeler(Labeler):
    """A labeler registered by a test only (zero energy and forces): one registry line plugs it in."""

    kind = "dummy"

    def theory(self) -> TheoryFingerprint:
        return TheoryFingerprint(code="dummy", method="zero")

    def prepare(self, atoms: Atoms, job_dir: Path) -> None:
        (Path(job_dir) / "input.txt").write_text(f"{len(atoms)}\n")

    def execute(self, job_dirs: list[Path]) -> None:
        return None

    def parse(self, job_dir: Path, atoms: Atoms) -> JobResult:
        return JobResult(Path(job_dir).name, ok=True, energy=0.0, forces=np.zeros((len(atoms), 3)))

    def run_script(self, job_dir: Path) -> Path:
        return Path(job_dir) / "input.txt"


def test_a_new_labeler_plugs_in_by_one_registry_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(config_mod.LABELERS, "dummy", LabelerEntry(f"{__name__}:DummyLabeler", None))
    cfg = config_from_mapping({"labeler": {"kind": "dummy"}}).labeler
    write_frames(tmp_path / "in.extxyz", molecule_frames()[:2])
    res = label_file(tmp_path / "in.extxyz", tmp_path / "out.extxyz", cfg)
    assert res.n_ok == 2 and res.labeler == "dummy" and res.theory.code == "dummy"
    assert [a.get_potential_energy() for a in read_frames(tmp_path / "out.extxyz", require_cell=False)] == [0, 0]


def test_cli_labeler_choices_are_the_registry() -> None:
    from eip_al.cli.label_cmds import LabelerKind

    assert [k.value for k in LabelerKind] == list(config_mod.LABELERS) == ["mock", "cp2k", "ase", "xtb"]


def test_a_served_deployment_cannot_set_the_calculator() -> None:
    cfg = config_from_mapping({"name": "x"})
    for overrides in ({"labeler": {"kind": "ase", "ase": {"calculator": "os:system"}}},
                      {"labeler.ase.kwargs": {"command": "id"}}, {"labeler.kind": "xtb"}):
        with pytest.raises(ParameterError, match=r"overrides labeler\..*: not allowed"):
            apply_overrides(cfg, overrides, "small")


def test_xtb_preflight_without_tblite(tmp_path: Path, monkeypatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tblite" else find_spec(name, *a))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "labeler": {"kind": "xtb", "xtb": {"accuracy": 0.7}}}))
    pre = preflight(path, tmp_path / "run")
    assert "labeler.kind xtb: tblite is not installed (pip install -e '.[xtb]' (or scripts/setup.sh))" in pre.problems
    assert "labeler: xtb (GFN2-xTB, tblite)" in pre.plan
