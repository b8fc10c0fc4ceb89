"""Labeling machinery without running real CP2K: parsing stored outputs of every failure
class, input decks (validated against the installed CP2K's schema when CP2K is there),
job directories, backends, retry, resume after a kill, export + ingest, the CLI.

CP2K itself is replaced by tests/data/cp2k/fake_cp2k.py (writes CP2K-2023-layout output
for a harmonic toy energy); the real CP2K runs are in test_cp2k.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from pydantic import ValidationError
from scipy import constants
from typer.testing import CliRunner

from eip_al.cli import app
from eip_al.config import ALConfig, ConfigError, CP2KConfig, LabelerConfig, SlurmConfig
from eip_al.io import FrameError, frame_id, read_frames, write_frames
from eip_al.label import (
    collect_labels,
    ingest,
    ingest_path,
    label_file,
    label_generation,
    prepare_label_jobs,
    run_label_job,
)
from eip_al.label.backends.slurm import (
    SlurmArray,
    array_script,
    parse_sacct,
    parse_sbatch,
    parse_squeue,
    render_template,
    sbatch_argv,
)
from eip_al.label.jobs import LabelBatch, _check_plausible, get_labeler, prepare_jobs
from eip_al.label.parse import parse_attempt, read_output
from eip_al.rundir import RunDir
from eip_al.schemas import LabelingResult, SelectionResult, TrustFractions

DATA = Path(__file__).parent / "data" / "cp2k"
FAKE = DATA / "fake_cp2k.py"
HARTREE_EV = constants.physical_constants["Hartree energy in eV"][0]  # CODATA of this scipy
BOHR_A = constants.physical_constants["Bohr radius"][0] * 1e10
K_FAKE = 0.05  # Hartree/Å², the toy energy of fake_cp2k.py


@pytest.fixture(autouse=True, scope="module")
def _schema_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the cached CP2K schema inside the test's temporary area."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EIP_AL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def water(shift: float = 0.0) -> Atoms:
    a = Atoms(
        "OH2",
        positions=[[3.0, 3.0, 3.1], [3.95, 3.0, 2.55], [2.24, 3.1, 2.51]],
        cell=np.eye(3) * 6.0,
        pbc=True,
    )
    a.positions[1, 0] += shift
    return a


def fake_cfg(**cp2k: object) -> LabelerConfig:
    """Labeler config running fake_cp2k.py, validating against the real CP2K's schema
    (or cp2k-input-tools' bundled one where CP2K is not installed)."""
    from eip_al.label.cp2k import resolve_schema

    base: dict[str, object] = dict(
        executable=str(FAKE),
        cutoff_ry=200,
        rel_cutoff_ry=40,
        schema_xml=resolve_schema(CP2KConfig()),
    )
    base.update(cp2k)
    return LabelerConfig(kind="cp2k", max_failure_fraction=0.2, cp2k=CP2KConfig(**base))


def toy_labels(atoms: Atoms) -> tuple[float, np.ndarray]:
    """What fake_cp2k.py computes, in eV and eV/Å (ASE's CODATA 2014 constants)."""
    from ase.units import Bohr, Hartree

    d = atoms.positions - atoms.cell.array.sum(axis=0) / 2
    energy = (K_FAKE * float(np.sum(d**2)) - 17.0) * Hartree
    # fake prints forces in Hartree/Bohr rounded to 8 decimals
    forces_au = np.round(-2 * K_FAKE * d * Bohr, 8)
    return energy, forces_au * Hartree / Bohr


def make_run(
    tmp_path: Path, frames: list[Atoms], labeler: LabelerConfig, gen: int = 0
) -> tuple[ALConfig, RunDir]:
    """A run directory whose generation `gen` has a selection of `frames` (with provenance)."""
    cfg = ALConfig(labeler=labeler)
    run = RunDir(tmp_path / "run")
    run.init(cfg)
    sel_dir = run.step_dir(gen, "select")
    sel_dir.mkdir(parents=True)
    for i, a in enumerate(frames):
        a.info.update(
            generation=gen, source="md", walker="md-300K-0", step=10 * i, config_uncertainty=0.1 + i
        )
    write(sel_dir / "selected.extxyz", frames)
    tf = TrustFractions(n=len(frames), accurate=0.0, candidate=1.0, failed=0.0)
    SelectionResult(
        generation=gen,
        lo=0.05,
        hi=1.0,
        lo_source="config",
        n_pool=len(frames),
        n_unphysical=0,
        n_accurate=0,
        n_candidate=len(frames),
        n_failed=0,
        n_selected=len(frames),
        n_requested=len(frames),
        per_walker={"md-300K-0": tf},
        overall=tf,
        selected_extxyz=run.rel(sel_dir / "selected.extxyz"),
        decisions_csv="select/decisions.csv",
    ).write(run.artifact_path(gen, "select"))
    return cfg, run


def calls(job_dir: Path) -> int:
    """How many times fake CP2K ran in this job dir (all attempts)."""
    return sum(len(p.read_text().splitlines()) for p in job_dir.rglob("calls.log"))


# --------------------------------------------------------------------------- parsing
CASES = {
    "ok": None,
    "ok_2025_layout": None,
    "not_run": "not_run",
    "crashed": "crashed",
    "crashed_no_output": "crashed",
    "walltime": "walltime",
    "scf_not_converged": "scf_not_converged",
    "scf_abort_2025": "scf_not_converged",
    "truncated": "truncated",
    "inconsistent_positions": "inconsistent",
    "inconsistent_atoms": "inconsistent",
    "implausible_forces": "implausible_forces",
    "implausible_nan": "implausible_forces",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stored_output_is_classified(case: str) -> None:
    """Every stored output (real CP2K 2023.1, or a documented edit of one) gets its class."""
    d = DATA / case
    atoms = read_frames(d / "frame.extxyz", require_labels=False)[0]
    result = _check_plausible(parse_attempt(case, d, atoms), len(atoms), max_force=100.0)
    assert result.failure_class == CASES[case], result.message
    assert result.ok == (CASES[case] is None)
    if not result.ok:
        assert result.message and result.energy is None and result.forces is None


@pytest.mark.parametrize(
    ("status", "expect"),
    [
        ("exit_code=143\nsignal=TERM\n", "walltime"),  # the trap recorded a TERM
        ("exit_code=143\nsignal=\n", "walltime"),  # killed before the trap could name it
        ("exit_code=143\nsignal=CANCELLED\n", "crashed"),  # the Slurm backend knows: scancel
        ("exit_code=137\nsignal=OUT_OF_MEMORY\n", "crashed"),  # SIGKILL by the scheduler, not time
    ],
)
def test_signal_names_the_cause_of_a_stop(tmp_path: Path, status: str, expect: str) -> None:
    """A TERM is a time limit unless the scheduler says it was a cancellation (or OOM)."""
    d = tmp_path / "attempt"
    shutil.copytree(DATA / "walltime", d)
    (d / "run.status").write_text(status)
    atoms = read_frames(d / "frame.extxyz", require_labels=False)[0]
    result = parse_attempt("j", d, atoms)
    assert result.failure_class == expect, result.message
    if expect == "crashed":
        assert status.split("signal=")[1].strip() in result.message


@pytest.mark.parametrize("case", ["ok", "ok_2025_layout"])
def test_labels_equal_printed_values_in_ev(case: str) -> None:
    """Energy and forces equal CP2K's printed Hartree and Hartree/Bohr values, converted with
    CODATA constants (scipy's, independent of the ase.units used by the parser; the two
    CODATA editions differ by < 1e-8 relative)."""
    d = DATA / case
    text = (d / "output.log").read_text()
    atoms = read_frames(d / "frame.extxyz", require_labels=False)[0]
    result = parse_attempt(case, d, atoms)
    e_ha = float(
        re.search(r"ENERGY\| Total FORCE_EVAL \( QS \) energy \S+?:?\s+(\S+)", text).group(1)
    )
    if case == "ok":
        block = text.split("ATOMIC FORCES in [a.u.]")[1].split("SUM OF ATOMIC FORCES")[0]
        rows = [
            ln.split()[3:6] for ln in block.splitlines() if ln.strip() and ln.split()[0].isdigit()
        ]
    else:
        rows = [ln.split()[2:5] for ln in text.splitlines() if re.match(r"\s*FORCES\|\s+\d", ln)]
    f_au = np.array(rows, dtype=float)
    assert f_au.shape == (3, 3)
    assert result.energy == pytest.approx(e_ha * HARTREE_EV, rel=1e-7)
    np.testing.assert_allclose(result.forces, f_au * HARTREE_EV / BOHR_A, rtol=1e-7, atol=1e-9)
    assert np.abs(result.forces).max() > 0.5  # a distorted water: forces well above noise


def test_unconverged_scf_is_rejected_although_cp2k_printed_labels() -> None:
    """CP2K 2023 prints energy and forces after 'SCF run NOT converged' and exits 0."""
    out = read_output((DATA / "scf_not_converged" / "output.log").read_text())
    assert out.normal_end and len(out.energies_ha) == 1 and out.forces_au is not None
    assert "exit_code=0" in (DATA / "scf_not_converged" / "run.status").read_text()
    assert out.scf_not_converged


def test_abort_message_is_reported() -> None:
    atoms = read_frames(DATA / "crashed" / "frame.extxyz", require_labels=False)[0]
    result = parse_attempt("x", DATA / "crashed", atoms)
    assert "GTH-PBE-q7" in result.message and "not found" in result.message


# --------------------------------------------------------------------------- decks
def test_template_deck_is_validated_fingerprinted_and_forced(tmp_path: Path) -> None:
    from cp2k_input_tools.parser import CP2KInputParser

    from eip_al.label.cp2k import CP2KLabeler, resolve_schema

    cfg = CP2KConfig(cutoff_ry=321, rel_cutoff_ry=45, eps_scf=3e-7, max_scf=17)
    lab = CP2KLabeler(cfg)
    th = lab.theory()
    assert th.code == "cp2k" and th.method == "PBE-D3"
    assert th.basis == {"H": "DZVP-MOLOPT-SR-GTH", "O": "DZVP-MOLOPT-SR-GTH"}
    assert th.potential == {"H": "GTH-PBE-q1", "O": "GTH-PBE-q6"}
    assert (th.cutoff_ry, th.rel_cutoff_ry, th.eps_scf) == (321, 45, 3e-7)
    assert (
        th.extra["dispersion"] == "DFTD3" and th.extra["dispersion_reference_functional"] == "PBE"
    )

    frame = water()
    frame.positions[0] += [7.0, 0.0, 0.0]  # outside the box: coordinates are kept as given
    lab.prepare(frame, tmp_path / "job")
    parser = CP2KInputParser(xmlspec=str(resolve_schema(cfg)), base_dir=str(tmp_path))
    with open(tmp_path / "job" / "input.inp") as fh:
        tree = parser.parse(fh)
    assert tree["+global"]["run_type"] == "energy_force"
    fe = tree["+force_eval"][0]
    assert fe["+print"]["+forces"]["_"] == "ON"
    assert fe["+dft"]["+mgrid"]["cutoff"] == 321 and fe["+dft"]["+scf"]["max_scf"] == 17
    coords = list(parser.coords())
    assert [c[0] for c in coords] == frame.get_chemical_symbols()
    np.testing.assert_allclose([c[1] for c in coords], frame.positions, atol=1e-9)
    np.testing.assert_allclose(fe["+subsys"]["+cell"]["a"], frame.cell[0], atol=1e-9)


def test_fingerprint_tracks_theory_not_scf_algorithm() -> None:
    from eip_al.label.cp2k import CP2KLabeler

    key = lambda **kw: CP2KLabeler(CP2KConfig(**kw)).theory().key()  # noqa: E731
    assert key(cutoff_ry=300) != key(cutoff_ry=400)
    assert key(eps_scf=1e-6) != key(eps_scf=1e-7)
    assert key(max_scf=20) == key(max_scf=80)
    lab = CP2KLabeler(CP2KConfig())
    assert "MINIMIZER CG" in lab.deck.retry_text and "MINIMIZER CG" not in lab.deck.text


USER_DECK = """\
@SET BOX 9.0
&GLOBAL
  PROJECT mine
  RUN_TYPE GEO_OPT
&END GLOBAL
&FORCE_EVAL
  &DFT
    BASIS_SET_FILE_NAME BASIS_MOLOPT
    POTENTIAL_FILE_NAME GTH_POTENTIALS
    &SCF
      EPS_SCF 2.0E-7
    &END SCF
    &XC
      &XC_FUNCTIONAL BLYP
      &END XC_FUNCTIONAL
    &END XC
  &END DFT
  &SUBSYS
    &CELL
      ABC ${BOX} ${BOX} ${BOX}
    &END CELL
    &COORD
      O 0 0 0
    &END COORD
    @INCLUDE kinds.inc
  &END SUBSYS
&END FORCE_EVAL
"""
KINDS = """\
&KIND O
  BASIS_SET DZVP-MOLOPT-GTH
  POTENTIAL GTH-BLYP-q6
&END KIND
&KIND H
  BASIS_SET DZVP-MOLOPT-GTH
  POTENTIAL GTH-BLYP-q1
&END KIND
"""


def user_deck(tmp_path: Path, text: str = USER_DECK) -> Path:
    """A user's deck in its own folder, with an @INCLUDE relative to it."""
    d = tmp_path / "deck"
    d.mkdir()
    (d / "kinds.inc").write_text(KINDS)
    (d / "mine.inp").write_text(text)
    return d / "mine.inp"


def test_user_deck_is_parsed_and_regenerated(tmp_path: Path) -> None:
    """The user's values win (variables and @INCLUDE resolved); eip-al forces ENERGY_FORCE,
    per-frame cell/coords, and fills missing cutoffs from the config."""
    from eip_al.label.cp2k import CP2KLabeler

    lab = CP2KLabeler(CP2KConfig(user_input=user_deck(tmp_path), cutoff_ry=333, eps_scf=1e-5))
    th = lab.theory()
    assert th.method == "BLYP" and th.eps_scf == 2e-7 and th.cutoff_ry == 333
    assert th.potential["H"] == "GTH-BLYP-q1"
    text = lab.input_text(water())
    assert "RUN_TYPE ENERGY_FORCE" in text and "GEO_OPT" not in text
    assert "ABC" not in text and "O 0 0 0" not in text
    assert "O 3.0000000000 3.0000000000 3.1000000000" in text


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (lambda s: s.replace("EPS_SCF 2.0E-7", "EPS_SCFF 2.0E-7"), r"mine\.inp:\d+: .*EPS_SCFF"),
        (lambda s: s + s[s.index("&FORCE_EVAL") :], r"exactly one &FORCE_EVAL"),
        (lambda s: s + "&EXT_RESTART\n&END EXT_RESTART\n", r"EXT_RESTART"),
        (lambda s: s.replace("  &END DFT", "  &END DFT\n  METHOD FIST"), r"only QUICKSTEP"),
    ],
)
def test_bad_user_deck_is_a_clear_error(tmp_path: Path, edit, expect: str) -> None:
    from eip_al.label.cp2k import CP2KLabeler

    deck = user_deck(tmp_path, edit(USER_DECK))
    with pytest.raises(ConfigError, match=expect):
        CP2KLabeler(CP2KConfig(user_input=deck))


def test_frame_the_deck_cannot_label_is_refused_before_writing(tmp_path: Path) -> None:
    frames = [water(), water() + Atoms("Na", positions=[[1, 1, 1]])]
    batch = LabelBatch(fake_cfg(), tmp_path / "label", tmp_path, 0)
    with pytest.raises(FrameError, match=r"in\.extxyz: frame 1: .*\['Na'\] have no &KIND"):
        prepare_jobs(batch, frames, source="in.extxyz")
    assert not (tmp_path / "label" / "jobs.json").exists()
    assert not list((tmp_path / "label").rglob("input.inp"))


# --------------------------------------------------------------------------- jobs
def test_local_jobs_run_in_parallel_with_retry_and_failure_classes(tmp_path: Path) -> None:
    frames = [water(0.01 * i) for i in range(5)]
    cfg, run = make_run(tmp_path, frames, fake_cfg().model_copy(update={"n_parallel": 2}))
    jobs = prepare_label_jobs(cfg, run, 0)
    modes = ["ok", "noconv", "abort", "noconv_always", "ok"]
    for job, mode in zip(jobs.jobs, modes, strict=True):
        (run.abs(job.job_dir) / "fake_mode").write_text(mode)
    res = label_generation(cfg, run, 0)
    by_id = {o.job_id: o for o in res.outcomes}
    assert [by_id[j.job_id].status for j in jobs.jobs] == ["ok", "ok", "failed", "failed", "ok"]
    assert by_id["000001"].attempts == 2  # converged with the stronger recipe
    assert by_id["000002"].failure_class == "crashed"
    assert by_id["000003"].failure_class == "scf_not_converged" and by_id["000003"].attempts == 2
    assert res.failures_by_class == {"crashed": 1, "scf_not_converged": 1}
    assert res.budget_exceeded and "max_failure_fraction" in res.message

    labeled = read_frames(run.abs(res.labeled_extxyz))
    assert [a.info["job_id"] for a in labeled] == ["000000", "000001", "000004"]
    for a in labeled:
        src = frames[int(a.info["job_id"])]
        energy, forces = toy_labels(src)
        assert a.get_potential_energy() == pytest.approx(energy, abs=1e-9)
        np.testing.assert_allclose(a.get_forces(), forces, atol=1e-9)
        assert a.info["frame_id"] == frame_id(src) and a.info["walker"] == "md-300K-0"
        assert a.info["theory"] == res.theory.key() and a.info["labeler"] == "cp2k"
        assert by_id[a.info["job_id"]].energy_per_atom == pytest.approx(energy / 3)
    failures = (run.step_dir(0, "label") / "failures.csv").read_text().splitlines()
    assert len(failures) == 3 and failures[1].startswith("000002,")

    # a rerun trusts outcome.json: nothing runs again, the result is the same
    before = {j.job_id: calls(run.abs(j.job_dir)) for j in jobs.jobs}
    assert before == {"000000": 1, "000001": 2, "000002": 1, "000003": 2, "000004": 1}
    again = label_generation(cfg, run, 0)
    assert {j.job_id: calls(run.abs(j.job_dir)) for j in jobs.jobs} == before
    assert again.outcomes == res.outcomes


def test_retry_disabled_records_scf_failure(tmp_path: Path) -> None:
    cfg, run = make_run(tmp_path, [water()], fake_cfg(retry_scf=False))
    jobs = prepare_label_jobs(cfg, run, 0)
    (run.abs(jobs.jobs[0].job_dir) / "fake_mode").write_text("noconv")
    out = run_label_job(cfg, run, 0, "000000")
    assert out.failure_class == "scf_not_converged" and out.attempts == 1


def test_prepare_keeps_unchanged_jobs_and_sets_aside_changed_ones(tmp_path: Path) -> None:
    frames = [water(), water(0.1)]
    cfg, run = make_run(tmp_path, frames, fake_cfg())
    first = prepare_label_jobs(cfg, run, 0)
    run_label_job(cfg, run, 0, "000000")
    job0 = run.abs(first.jobs[0].job_dir)
    assert (job0 / "outcome.json").exists()

    # same theory, other launcher: the finished job and its result stay, run.sh is refreshed
    cfg2 = cfg.model_copy(deep=True)
    cfg2.labeler.cp2k.launcher = ["env", "X=1"]
    second = prepare_label_jobs(cfg2, run, 0)
    assert second.jobs == first.jobs
    assert (job0 / "outcome.json").exists() and "env X=1" in (job0 / "run.sh").read_text()

    # a different cutoff is another input: old dirs are moved aside, not deleted
    cfg3 = cfg.model_copy(deep=True)
    cfg3.labeler.cp2k.cutoff_ry = 250
    third = prepare_label_jobs(cfg3, run, 0)
    assert all(
        a.input_sha256 != b.input_sha256 for a, b in zip(first.jobs, third.jobs, strict=True)
    )
    assert not (job0 / "outcome.json").exists() and "CUTOFF 250" in (job0 / "input.inp").read_text()
    stale = list((run.step_dir(0, "label") / "stale").glob("000000-*"))
    assert len(stale) == 1 and (stale[0] / "outcome.json").exists()


def test_timeout_is_walltime_and_kills_the_job(tmp_path: Path) -> None:
    cfg, run = make_run(tmp_path, [water()], fake_cfg(timeout_s=1.0))
    jobs = prepare_label_jobs(cfg, run, 0)
    job_dir = run.abs(jobs.jobs[0].job_dir)
    (job_dir / "fake_mode").write_text("sleep:30")
    t0 = time.monotonic()
    out = run_label_job(cfg, run, 0, "000000")
    assert out.failure_class == "walltime" and out.status == "failed"
    assert time.monotonic() - t0 < 25  # the sleeping fake CP2K was terminated, not waited for
    assert "signal=TERM" in (job_dir / "run.status").read_text()


def test_export_then_ingest_is_idempotent(tmp_path: Path) -> None:
    frames = [water(), water(0.05), water(-0.05)]
    cfg, run = make_run(tmp_path, frames, fake_cfg().model_copy(update={"backend": "export"}))
    res = label_generation(cfg, run, 0)
    assert [o.failure_class for o in res.outcomes] == ["not_run"] * 3
    assert res.budget_exceeded and "eip-al ingest" in res.message
    assert all(calls(run.abs(j.job_dir)) == 0 for j in prepare_label_jobs(cfg, run, 0).jobs)

    jobs_dir = run.step_dir(0, "label") / "jobs"
    tasks = [jobs_dir / t for t in (jobs_dir / "tasks.txt").read_text().split()]
    subprocess.run(["bash", str(tasks[0])], check=True)  # one job finished so far
    partial = ingest(run)
    assert partial.n_ok == 1 and partial.budget_exceeded
    assert not run.artifact_path(0, "label").exists()  # over budget: the step is not done

    for t in tasks[1:]:
        subprocess.run(["bash", str(t)], check=True)
    done = ingest(run)
    assert done.n_ok == 3 and not done.budget_exceeded
    art = LabelingResult.load(run.artifact_path(0, "label"))
    assert art.outcomes == done.outcomes
    mtime = run.artifact_path(0, "label").stat().st_mtime_ns
    assert ingest(run).outcomes == done.outcomes
    assert run.artifact_path(0, "label").stat().st_mtime_ns == mtime  # nothing rewritten
    assert len(read_frames(run.abs(done.labeled_extxyz))) == 3


def test_export_prepares_scf_retry_for_the_next_ingest(tmp_path: Path) -> None:
    cfg, run = make_run(tmp_path, [water()], fake_cfg().model_copy(update={"backend": "export"}))
    jobs = prepare_label_jobs(cfg, run, 0)
    job_dir = run.abs(jobs.jobs[0].job_dir)
    (job_dir / "fake_mode").write_text("noconv")
    subprocess.run(["bash", str(job_dir / "run.sh")], check=True)
    first = collect_labels(cfg, run, 0)
    assert first.outcomes[0].failure_class == "scf_not_converged"
    assert "retry-1/run.sh" in first.outcomes[0].message
    subprocess.run(["bash", str(job_dir / "retry-1" / "run.sh")], check=True)
    second = ingest(run)
    assert second.n_ok == 1 and second.outcomes[0].attempts == 2


KILL_SCRIPT = """
import sys
from eip_al.config import LabelerConfig
from eip_al.label import label_file
cfg = LabelerConfig.model_validate_json(sys.argv[1])
label_file(sys.argv[2], sys.argv[3], cfg, sys.argv[4])
"""


def test_killed_labeling_resumes_without_losing_or_repeating_jobs(tmp_path: Path) -> None:
    """SIGKILL the labeling process mid-way; the rerun neither reruns finished jobs, nor starts
    a second copy of the job that was still running, nor records any frame twice."""
    frames = [water(0.02 * i) for i in range(4)]
    write(tmp_path / "in.extxyz", frames)
    cfg = fake_cfg().model_copy(update={"n_parallel": 1})
    work = tmp_path / "work"
    env = dict(os.environ, FAKE_CP2K_MODE="sleep:0.7")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILL_SCRIPT,
            cfg.model_dump_json(),
            str(tmp_path / "in.extxyz"),
            str(tmp_path / "out.extxyz"),
            str(work),
        ],
        env=env,
    )
    deadline = time.monotonic() + 60
    while len(list(work.glob("jobs/*/outcome.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name for p in work.glob("jobs/*/outcome.json")}
    assert len(finished) >= 2

    os.environ["FAKE_CP2K_MODE"] = "sleep:0.7"
    try:
        res = label_file(tmp_path / "in.extxyz", tmp_path / "out.extxyz", cfg, work)
    finally:
        del os.environ["FAKE_CP2K_MODE"]
    assert res.n_ok == 4
    assert {d.name: calls(d) for d in (work / "jobs").iterdir() if d.is_dir()} == {
        f"{i:06d}": 1 for i in range(4)
    }
    out = read_frames(tmp_path / "out.extxyz")
    assert sorted(a.info["job_id"] for a in out) == [f"{i:06d}" for i in range(4)]
    assert len({a.info["frame_id"] for a in out}) == 4


# --------------------------------------------------------------------------- mock
def test_mock_labeler_through_the_same_interface(tmp_path: Path) -> None:
    from eip_al.label.mock import MockWaterCalculator
    from eip_al.systems import build_water_box

    frames = [build_water_box(8, seed=s) for s in range(3)]
    lab = LabelerConfig(kind="mock", max_failure_fraction=0.5)
    cfg, run = make_run(tmp_path, frames, lab)
    res = label_generation(cfg, run, 0)
    assert res.n_ok == 3 and res.theory.code == "mock" and not res.budget_exceeded
    for a, src in zip(read_frames(run.abs(res.labeled_extxyz)), frames, strict=True):
        np.testing.assert_allclose(a.positions, src.positions, atol=1e-7)
        ref = Atoms(a.numbers, positions=a.positions, cell=a.cell, pbc=True)
        ref.calc = MockWaterCalculator()
        assert a.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(a.get_forces(), ref.get_forces(), atol=1e-8)


def test_mock_jobs_run_by_their_script_give_the_in_process_labels(tmp_path: Path) -> None:
    """`export` + each job's run.sh (what a Slurm array task runs) = in-process labels,
    noise and injected failures included; `eip-al ingest` collects them."""
    from eip_al.systems import build_water_box

    write_frames(tmp_path / "in.extxyz", [build_water_box(4, seed=s) for s in range(6)])
    mock = {"force_noise_eV_A": 0.2, "energy_noise_eV": 0.01, "failure_rate": 0.3, "seed": 5}
    local = label_file(tmp_path / "in.extxyz", tmp_path / "local.extxyz",
                       LabelerConfig(kind="mock", max_failure_fraction=1.0, mock=mock))
    exported = LabelerConfig(kind="mock", backend="export", max_failure_fraction=1.0, mock=mock)
    label_file(tmp_path / "in.extxyz", tmp_path / "exp.extxyz", exported, tmp_path / "work")
    jobs = tmp_path / "work" / "jobs"
    tasks = (jobs / "tasks.txt").read_text().split()
    assert len(tasks) == 6
    for rel in tasks:  # what a user (or a Slurm array task) does with exported jobs
        subprocess.run(["bash", str(jobs / rel)], check=True, timeout=120, cwd=tmp_path)
        assert "exit_code=0" in ((jobs / rel).parent / "run.status").read_text()
    res = ingest_path(tmp_path / "work")
    assert [(o.status, o.failure_class) for o in res.outcomes] == [
        (o.status, o.failure_class) for o in local.outcomes]
    assert 0 < res.n_failed < 6  # failures are drawn per frame: the same ones
    ref = {a.info["job_id"]: a for a in read_frames(tmp_path / "local.extxyz")}
    got = {a.info["job_id"]: a for a in read_frames(tmp_path / "exp.extxyz")}
    assert sorted(got) == sorted(ref)
    for job_id, a in ref.items():
        assert got[job_id].get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(got[job_id].get_forces(), a.get_forces(), atol=1e-12)

    # a job whose run.sh ended without a result is a failure naming the cause, not "not run"
    job = (jobs / tasks[0]).parent
    (job / "result.json").unlink()
    (job / "run.status").write_text("exit_code=1\nsignal=\nruntime_s=0.1\n")
    (job / "stderr.log").write_text("Traceback ...\nModuleNotFoundError: No module named 'eip_al'\n")
    atoms = read_frames(job / "structure.extxyz", require_labels=False)[0]
    broken = get_labeler(exported).parse(job, atoms)
    assert broken.failure_class == "crashed" and "No module named 'eip_al'" in broken.message


def test_mock_job_without_its_job_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    from eip_al.label import mock_job

    assert mock_job.main([str(tmp_path)]) == 2
    assert f"eip-al mock job {tmp_path}: cannot read job.json" in capsys.readouterr().err
    (tmp_path / "job.json").write_text('{"frame_id": "00", "mock": {"force_noise_eV_A": -1}}')
    assert mock_job.main([str(tmp_path)]) == 2  # an invalid config is refused, not used
    assert "force_noise_eV_A" in capsys.readouterr().err
    assert not (tmp_path / "result.json").exists()


def test_failures_above_budget_are_flagged(tmp_path: Path) -> None:
    from eip_al.systems import build_water_box

    frames = [build_water_box(4, seed=s) for s in range(10)]
    lab = LabelerConfig(
        kind="mock", max_failure_fraction=0.1, mock={"failure_rate": 0.5, "seed": 3}
    )
    cfg, run = make_run(tmp_path, frames, lab)
    res = label_generation(cfg, run, 0)
    assert 0 < res.n_failed < 10 and res.failures_by_class == {"injected": res.n_failed}
    assert res.budget_exceeded and f"{res.n_failed} of 10" in res.message
    labeled = read_frames(run.abs(res.labeled_extxyz))
    ok_ids = {o.job_id for o in res.outcomes if o.status == "ok"}
    assert {a.info["job_id"] for a in labeled} == ok_ids


# --------------------------------------------------------------------------- slurm
def test_slurm_array_script_and_arguments(tmp_path: Path) -> None:
    scfg = SlurmConfig(
        partition="short",
        account="chem",
        time="00:30:00",
        cpus_per_task=4,
        max_array_parallel=7,
        extra_sbatch=["--mem=4G"],
    )
    text = array_script(
        scfg,
        job_name="eip-label-0",
        task_list=tmp_path / "my tasks.txt",
        n_tasks=12,
        log_dir=tmp_path / "logs",
    )
    for line in (
        "#SBATCH --array=0-11%7",
        "#SBATCH --partition=short",
        "#SBATCH --account=chem",
        "#SBATCH --time=00:30:00",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=4G",
    ):
        assert line in text.splitlines()
    assert f"task_list='{tmp_path / 'my tasks.txt'}'" in text  # quoted for the shell
    assert "{{" not in text
    res = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert res.returncode == 0, res.stderr
    assert sbatch_argv(tmp_path / "a.sh") == ["sbatch", "--parsable", str(tmp_path / "a.sh")]
    for bad in (SlurmConfig(partition="a b"), SlurmConfig(extra_sbatch=["mem=1G"])):
        with pytest.raises(ConfigError):
            array_script(bad, job_name="j", task_list=tmp_path / "t", n_tasks=1, log_dir=tmp_path)
    with pytest.raises(ValidationError, match="control character"):
        SlurmConfig(extra_sbatch=["--mem=1G\nrm -rf /"])
    with pytest.raises(ConfigError, match="placeholders"):
        render_template("{{a}} {{b}}", {"a": "1"})


def test_slurm_array_script_quotes_paths_and_refuses_newlines(tmp_path: Path) -> None:
    """A space (or quote) in the run directory stays one path; a newline would inject a command."""
    work = tmp_path / "my run's dir"
    text = array_script(
        SlurmConfig(), job_name="j", task_list=work / "tasks.txt", n_tasks=2, log_dir=work / "logs"
    )
    res = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert res.returncode == 0, res.stderr
    sbatch = [ln.removeprefix("#SBATCH ") for ln in text.splitlines() if ln.startswith("#SBATCH")]
    # sbatch splits #SBATCH lines with shell quoting: each line is exactly one option
    assert all(len(shlex.split(line)) == 1 for line in sbatch), sbatch
    assert f"--output={work / 'logs' / '%A_%a.out'}" in [shlex.split(ln)[0] for ln in sbatch]
    for bad in (tmp_path / "x\ntouch /tmp/pwned", tmp_path / "tab\there"):
        with pytest.raises(ConfigError, match="control character"):
            array_script(SlurmConfig(), job_name="j", task_list=bad / "t", n_tasks=1, log_dir=bad)
    with pytest.raises(ConfigError, match="run directory: must not contain"):
        RunDir(tmp_path / "a\nb").init(ALConfig())
    assert not (tmp_path / "a\nb").exists()


def test_slurm_state_parsing() -> None:
    assert parse_sbatch("4242\n") == "4242" and parse_sbatch("4243;cluster2") == "4243"
    squeue = "77_0|COMPLETED\n77_1|RUNNING\n77_[2-4%2]|PENDING\n78_0|RUNNING\n"
    states = parse_squeue(squeue, "77")
    assert {k: v.state for k, v in states.items()} == {
        0: "COMPLETED",
        1: "RUNNING",
        2: "PENDING",
        3: "PENDING",
        4: "PENDING",
    }
    assert states[0].terminal and not states[1].terminal
    sacct = textwrap.dedent("""\
        77_0|COMPLETED|0:0
        77_0.batch|COMPLETED|0:0
        77_1|TIMEOUT|0:15
        77_2|CANCELLED by 0|0:15
        77_3|FAILED|3:0
        77_4|OUT_OF_MEMORY|0:125
    """)
    acct = parse_sacct(sacct, "77")
    assert {k: (v.state, v.exit_code) for k, v in acct.items()} == {
        0: ("COMPLETED", 0),
        1: ("TIMEOUT", 143),
        2: ("CANCELLED", 143),
        3: ("FAILED", 3),
        4: ("OUT_OF_MEMORY", 253),
    }


class FakeSlurm:
    """Answers sbatch/squeue/sacct argument lists; runs each array task when it 'starts'."""

    def __init__(self, timeout_tasks: set[int] = frozenset()) -> None:
        self.calls: list[list[str]] = []
        self.polls = 0
        self.timeout_tasks = timeout_tasks
        self.scripts: list[str] = []

    def __call__(self, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        if argv[0] == "sbatch":
            self.script = Path(argv[-1]).read_text()
            task_list = re.search(r"task_list=(\S+)", self.script).group(1).strip("'")
            self.scripts = Path(task_list).read_text().split()
            return subprocess.CompletedProcess(argv, 0, "99\n", "")
        if argv[0] == "squeue":
            self.polls += 1
            if self.polls == 1:
                rows = [f"99_{i}|PENDING" for i in range(len(self.scripts))]
            else:
                for i, s in enumerate(self.scripts):
                    if i not in self.timeout_tasks and not (Path(s).parent / "run.status").exists():
                        subprocess.run(["bash", s], check=False)
                rows = [
                    f"99_{i}|{'TIMEOUT' if i in self.timeout_tasks else 'COMPLETED'}"
                    for i in range(len(self.scripts))
                ]
            return subprocess.CompletedProcess(argv, 0, "\n".join(rows) + "\n", "")
        return subprocess.CompletedProcess(argv, 1, "", "sacct: accounting storage is disabled")


def test_slurm_backend_submits_once_polls_and_reattaches(tmp_path: Path) -> None:
    frames = [water(), water(0.05), water(0.1)]
    batch = LabelBatch(
        fake_cfg().model_copy(update={"backend": "slurm"}), tmp_path / "label", tmp_path, 0
    )
    jobs = prepare_jobs(batch, frames, "in")
    scripts = [batch.labeler.run_script(batch.job_dir(j)) for j in jobs.jobs]
    fake = FakeSlurm(timeout_tasks={2})
    backend = SlurmArray(batch.label_dir, batch.cfg.slurm, runner=fake, sleep=lambda s: None)
    backend.run(scripts)
    assert [c[0] for c in fake.calls].count("sbatch") == 1
    assert backend.submissions()[0]["job_id"] == "99"
    # the task that hit the time limit never wrote run.status: the scheduler's state is recorded
    assert "signal=TERM" in (scripts[2].parent / "run.status").read_text()
    # a new process re-attaches: everything finished, nothing is submitted again
    again = FakeSlurm()
    SlurmArray(batch.label_dir, batch.cfg.slurm, runner=again, sleep=lambda s: None).run(scripts)
    assert again.calls == []
    from eip_al.label.jobs import collect

    res = collect(batch)
    assert [o.failure_class for o in res.outcomes] == [None, None, "walltime"]


# --------------------------------------------------------------------------- CLI
def test_cli_label_and_ingest(tmp_path: Path) -> None:
    from eip_al.systems import build_water_box

    write(tmp_path / "in.extxyz", [build_water_box(4, seed=s) for s in range(3)])
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["label", str(tmp_path / "in.extxyz"), str(tmp_path / "out.extxyz"), "--labeler", "mock"],
    )
    assert res.exit_code == 0, res.output
    assert len(read_frames(tmp_path / "out.extxyz")) == 3
    assert (tmp_path / "out.failures.csv").read_text().startswith("job_id,frame_id,walker,kind,failure_class")

    schema = fake_cfg().cp2k.schema_xml
    (tmp_path / "cfg.yaml").write_text(
        f"labeler:\n  kind: cp2k\n  cp2k:\n    executable: {FAKE}\n    schema_xml: {schema}\n    cutoff_ry: 200\n"
    )
    res = runner.invoke(
        app,
        [
            "label",
            str(tmp_path / "in.extxyz"),
            str(tmp_path / "x.extxyz"),
            "--config",
            str(tmp_path / "cfg.yaml"),
            "--backend",
            "export",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "ingest" in res.output and (tmp_path / "x.extxyz").read_text() == ""
    work = tmp_path / "x.extxyz.jobs"
    for t in (work / "jobs" / "tasks.txt").read_text().split():
        subprocess.run(["bash", t], cwd=work / "jobs", check=True)
    res = runner.invoke(app, ["ingest", str(work)])
    assert res.exit_code == 0, res.output
    assert len(read_frames(tmp_path / "x.extxyz")) == 3

    res = runner.invoke(
        app, ["label", str(tmp_path / "missing.extxyz"), str(tmp_path / "y.extxyz")]
    )
    assert res.exit_code == 2 and "missing.extxyz" in res.output
    res = runner.invoke(app, ["ingest", str(tmp_path)])
    assert res.exit_code == 2 and "neither a run directory" in " ".join(res.output.split())
    with pytest.raises(FileNotFoundError):
        ingest_path(tmp_path / "nowhere")


def test_force_outlier_label_is_quarantined_and_not_merged(tmp_path: Path) -> None:
    """A selected frame with an O–O close contact (2.0 Å: the mock gives ~40 eV/Å) is labelled,
    then quarantined against the dataset's forces: listed with walker and kind, written to
    quarantine.extxyz, counted against the budget, and absent from the merged dataset."""
    from eip_al.data import merge_generation, write_dataset
    from eip_al.label import outlier_force_limit
    from eip_al.label.mock import MockWaterCalculator
    from eip_al.systems import build_water_box

    def dimer(d: float) -> Atoms:  # two waters, O–O distance d (Å), in a 12 Å box
        a = water()
        b = a.copy()
        b.rotate(180, "z")
        b.translate(a.positions[0] + [d, 0, 0] - b.positions[0])
        out = a + b
        out.cell, out.pbc = [12.0] * 3, True
        out.center()
        return out

    lab = LabelerConfig(kind="mock", max_failure_fraction=0.5)
    normal = [build_water_box(8, seed=s) for s in range(3)]
    fine, squeezed = dimer(2.9), dimer(2.1)  # mock max |F|: 1.5 and 21 eV/Å
    cfg, run = make_run(tmp_path, [fine, squeezed], lab)
    seed = []
    for a in normal:
        a.calc = MockWaterCalculator()
        a.get_forces()
        a.info.update(source="seed", generation=-1)
        seed.append(a)
    write_dataset(seed, run.seed_dir, -1, get_labeler(lab).theory(), cfg.merge, run, source="seed")
    limit, rule = outlier_force_limit(lab, run, 0)
    norms = np.concatenate([np.linalg.norm(a.get_forces(), axis=1) for a in seed])
    assert limit == pytest.approx(4.0 * np.percentile(norms, 99.9)) and "99.9th percentile" in rule

    res = label_generation(cfg, run, 0)
    assert res.n_ok == 1 and res.failures_by_class == {"outlier_forces": 1}
    assert res.outlier_force_limit == pytest.approx(limit)
    bad = next(o for o in res.outcomes if o.status == "failed")
    assert bad.frame_id == frame_id(squeezed) and "quarantined" in (bad.message or "")
    quarantined = read_frames(run.abs(res.quarantine_extxyz))
    assert len(quarantined) == 1 and np.linalg.norm(quarantined[0].get_forces(), axis=1).max() > limit
    rows = (run.step_dir(0, "label") / "failures.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["job_id", "frame_id", "walker", "kind", "failure_class"]
    assert rows[1].split(",")[2:5] == ["md-300K-0", "md", "outlier_forces"]
    res.write(run.artifact_path(0, "label"))
    merged = merge_generation(cfg, run, 0)
    ids = {a.info["frame_id"] for a in read_frames(run.abs(merged.dataset_extxyz))}
    assert frame_id(squeezed) not in ids and frame_id(fine) in ids
    assert merged.n_frames == len(seed) + 1
