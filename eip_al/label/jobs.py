"""Labeling a batch of frames: job directories, running them, per-job outcomes, collection.

Layout of a label directory (`<run>/gen-XXX/label/`, or the work directory of
`eip-al label`)::

    jobs.json               LabelingJobSet: job id <-> frame id <-> job dir <-> input hash
    jobs/<job_id>/          what the labeler wrote (CP2K: input.inp, run.sh), frame.extxyz
                            (the frame with its provenance), outputs, and outcome.json
    jobs/tasks.txt          every job's run script, relative to jobs/ (for exported jobs)
    stale/<job_id>-<hash>/  job dirs replaced because the input changed (kept, not lost)
    labeled.extxyz          the successfully labeled frames
    failures.csv            one row per failed job: walker, kind, class, attempts, message
    quarantine.extxyz       labels refused as force outliers (outlier_forces), with their labels
    slurm/                  array scripts, task lists, submissions.json, logs (slurm only)

`outcome.json` is written atomically once a job has ended (success or failure) and is the
only thing a rerun trusts: killing eip-al mid-labeling loses no finished label, and
running again neither repeats a finished job nor records one twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
import shutil
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write as ase_write

from eip_al.atomic import atomic_write_text
from eip_al.config import LabelerConfig
from eip_al.io import (
    attach_labels,
    extxyz_safe_string,
    frame_id,
    read_frames,
    validate_frame,
    write_frames,
)
from eip_al.label.backends import Backend, Runner, backend_for
from eip_al.label.base import JobResult, Labeler, import_object
from eip_al.progress import bar
from eip_al.registries import LABELERS
from eip_al.schemas import JobOutcome, LabelingJob, LabelingJobSet, LabelingResult, Strict

log = logging.getLogger(__name__)

MANIFEST_NAME = "jobs.json"
FRAME_NAME = "frame.extxyz"
OUTCOME_NAME = "outcome.json"
LABELED_NAME = "labeled.extxyz"
FAILURES_NAME = "failures.csv"
QUARANTINE_NAME = "quarantine.extxyz"  # labels refused as force outliers (with labels, for inspection)
_UNHASHED = frozenset({"run.sh"})  # launcher details: changing them keeps finished jobs


class JobRecord(Strict):
    """outcome.json: the final outcome of one job, with its labels (eV, eV/Å) on success."""

    theory: str  # TheoryFingerprint.key() the labels were made with
    input_sha256: str
    outcome: JobOutcome
    energy: float | None = None
    forces: list[list[float]] | None = None


# ------------------------------------------------------------------------- labelers
_LABELERS: dict[str, Labeler] = {}
_LABELERS_LOCK = threading.Lock()


def labeler_class(kind: str) -> type[Labeler]:
    """The `Labeler` class registered for `kind` in eip_al.registries.LABELERS."""
    return import_object(LABELERS[kind].target, f"labeler.kind {kind}")


def get_labeler(labeler_cfg: LabelerConfig) -> Labeler:
    """The labeler `labeler_cfg.kind` describes, built from its settings section (one
    instance per distinct config). ConfigError if it cannot be built (e.g. an unimportable
    calculator)."""
    key = labeler_cfg.model_dump_json()
    with _LABELERS_LOCK:
        found = _LABELERS.get(key)
        if found is None:
            section = LABELERS[labeler_cfg.kind].section
            cls = labeler_class(labeler_cfg.kind)
            found = cls(getattr(labeler_cfg, section)) if section else cls()
            _LABELERS[key] = found
    return found


@dataclass
class LabelBatch:
    """One batch of labeling jobs: where they live, how they run, what labels them."""

    cfg: LabelerConfig
    label_dir: Path
    root: Path  # artifact paths are relative to this (the run directory)
    generation: int
    # labels with a max per-atom |F| above this (eV/Å) are quarantined as outlier_forces
    outlier_force_limit: float | None = None
    outlier_rule: str = ""  # how the limit was derived, for the failure message
    labeler: Labeler = field(init=False)
    backend: Backend = field(init=False)

    def __post_init__(self) -> None:
        self.label_dir = Path(self.label_dir)
        self.root = Path(self.root).resolve()
        self.labeler = get_labeler(self.cfg)
        self.backend = backend_for(self.cfg.backend)

    @property
    def manifest_path(self) -> Path:
        return self.label_dir / MANIFEST_NAME

    def job_dir(self, job: LabelingJob) -> Path:
        return self.root / job.job_dir

    def rel(self, path: Path) -> str:
        return os.path.relpath(Path(path).resolve(), self.root)

    def manifest(self) -> LabelingJobSet:
        if not self.manifest_path.exists():
            raise FileNotFoundError(f"{self.manifest_path}: no labeling jobs prepared here yet")
        return LabelingJobSet.load(self.manifest_path)

    def check_backend(self) -> None:
        """Refuse a backend this labeler cannot use, before anything is written."""
        self.labeler.check_backend(self.cfg.backend)


# ------------------------------------------------------------------------- prepare
def _hash_dir(theory_key: str, d: Path, names: Iterable[str]) -> str | None:
    """Hash of the theory and the named files of `d` (None if one is missing)."""
    h = hashlib.sha256(theory_key.encode())
    for name in sorted(names):
        try:
            data = (d / name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def _input_names(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.is_file() and p.name not in _UNHASHED]


def _frame_text(atoms: Atoms, where: str) -> str:
    """The frame as extxyz text, without any calculator (old labels or predictions are not
    carried over) and with string info protected from ASE's type guessing."""
    frame = atoms.copy()
    for k, v in frame.info.items():
        if isinstance(v, str):
            frame.info[k] = extxyz_safe_string(v, k, where)
    buf = io.StringIO()
    ase_write(buf, frame, format="extxyz")
    return buf.getvalue()


def prepare_jobs(batch: LabelBatch, frames: list[Atoms], source: str) -> LabelingJobSet:
    """Write one job directory per frame and the manifest; keep job dirs whose input is unchanged.

    Every frame is checked first (a bad frame is an error naming `source` and its index,
    and nothing is written). A job dir is built in a temporary folder and renamed into
    place; an existing dir with the same input hash is kept with its results (only its
    run script is refreshed); one with a different hash is moved to `stale/`.
    """
    batch.check_backend()
    labeler = batch.labeler
    for i, atoms in enumerate(frames):
        where = f"{source}: frame {i}"
        validate_frame(atoms, where=where, require_labels=False, require_cell=False)
        labeler.check_frame(atoms, where)
    theory = labeler.theory()
    key = theory.key()
    jobs_dir = batch.label_dir / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    jobs: list[LabelingJob] = []
    with bar(len(frames) >= 50) as progress:
        task = progress.add_task("preparing jobs", total=len(frames))
        for i, atoms in enumerate(frames):
            job_id = f"{i:06d}"
            fid = str(atoms.info.get("frame_id") or frame_id(atoms))
            atoms.info["frame_id"] = fid
            target = jobs_dir / job_id
            tmp = jobs_dir / f".tmp-{job_id}"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            labeler.prepare(atoms, tmp)
            (tmp / FRAME_NAME).write_text(_frame_text(atoms, f"{source}: frame {i}"))
            names = _input_names(tmp)
            digest = _hash_dir(key, tmp, names)
            if digest is None:
                raise RuntimeError(f"{tmp}: files written by the {batch.cfg.kind} labeler vanished")
            if target.exists() and _hash_dir(key, target, names) == digest:
                for name in _UNHASHED & {p.name for p in tmp.iterdir()}:
                    new = (tmp / name).read_bytes()
                    if not (target / name).exists() or (target / name).read_bytes() != new:
                        atomic_write_text(target / name, new.decode())
                shutil.rmtree(tmp)
            else:
                if target.exists():
                    old = _hash_dir(key, target, _input_names(target)) or "partial"
                    stale = batch.label_dir / "stale" / f"{job_id}-{old[:8]}"
                    if stale.exists():
                        shutil.rmtree(stale)
                    stale.parent.mkdir(exist_ok=True)
                    log.warning("%s: input changed; old job moved to %s", target, stale)
                    os.replace(target, stale)
                os.replace(tmp, target)
            jobs.append(
                LabelingJob(
                    job_id=job_id, frame_id=fid, job_dir=batch.rel(target), input_sha256=digest
                )
            )
            progress.advance(task)
    scripts = [labeler.run_script(batch.root / j.job_dir) for j in jobs]
    atomic_write_text(jobs_dir / "tasks.txt", "".join(f"{os.path.relpath(s, jobs_dir)}\n" for s in scripts))
    job_set = LabelingJobSet(
        generation=batch.generation,
        labeler=batch.cfg.kind,
        backend=batch.cfg.backend,
        theory=theory,
        jobs=jobs,
    )
    job_set.write(batch.manifest_path)
    return job_set


# ------------------------------------------------------------------------- one job
def _read_record(path: Path, theory_key: str, input_sha256: str) -> JobRecord | None:
    try:
        rec = JobRecord.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None
    if rec.theory != theory_key or rec.input_sha256 != input_sha256:
        return None
    return rec


def _frame(batch: LabelBatch, job: LabelingJob) -> Atoms:
    path = batch.job_dir(job) / FRAME_NAME
    atoms = read_frames(path, require_labels=False, require_cell=False)[0]
    atoms.calc = None
    return atoms


def _check_plausible(result: JobResult, n_atoms: int, max_force: float) -> JobResult:
    """Reject labels with non-finite numbers, wrong shapes or forces above `max_force` (eV/Å)."""
    if not result.ok:
        return result
    forces = np.asarray(result.forces, dtype=float)
    problem = None
    if result.energy is None or not math.isfinite(result.energy):
        problem = f"energy is not finite ({result.energy})"
    elif forces.shape != (n_atoms, 3) or not np.all(np.isfinite(forces)):
        problem = f"forces are missing, not finite or of shape {forces.shape}"
    else:
        fmax = float(np.max(np.linalg.norm(forces, axis=1))) if n_atoms else 0.0
        if fmax > max_force:
            problem = f"max |F| = {fmax:.1f} eV/Å above labeler.max_force_eV_A = {max_force:g}"
    if problem is None:
        return result
    return JobResult(
        result.job_id,
        ok=False,
        failure_class="implausible_forces",
        message=problem,
        runtime_s=result.runtime_s,
        attempts=result.attempts,
    )


def _outcome(job: LabelingJob, atoms: Atoms, result: JobResult) -> JobOutcome:
    return JobOutcome(
        job_id=job.job_id,
        frame_id=job.frame_id,
        status="ok" if result.ok else "failed",
        failure_class=None if result.ok else (result.failure_class or "crashed"),
        message=result.message,
        runtime_s=result.runtime_s,
        energy_per_atom=result.energy / len(atoms)
        if result.ok and result.energy is not None and len(atoms)
        else None,
        attempts=result.attempts,
    )


def _finish(
    batch: LabelBatch, job: LabelingJob, atoms: Atoms, result: JobResult, theory_key: str
) -> tuple[JobOutcome, JobRecord | None]:
    """Check the result; if the job has ended, write outcome.json (atomic) and return it."""
    result = _check_plausible(result, len(atoms), batch.cfg.max_force_eV_A)
    outcome = _outcome(job, atoms, result)
    job_dir = batch.job_dir(job)
    if result.failure_class == "not_run" or not batch.labeler.is_finished(job_dir):
        return outcome, None
    rec = JobRecord(
        theory=theory_key,
        input_sha256=job.input_sha256,
        outcome=outcome,
        energy=result.energy if result.ok else None,
        forces=np.asarray(result.forces).tolist() if result.ok else None,
    )
    atomic_write_text(job_dir / OUTCOME_NAME, rec.model_dump_json() + "\n")
    return outcome, rec


def label_job(
    batch: LabelBatch, job: LabelingJob, runner: Runner | None, theory_key: str
) -> JobOutcome:
    """Run one job with `runner` (None: only read what is there), retry once if the labeler
    offers a stronger recipe, and record the outcome. Never raises for a job failure."""
    job_dir = batch.job_dir(job)
    rec = _read_record(job_dir / OUTCOME_NAME, theory_key, job.input_sha256)
    if rec is not None:
        return rec.outcome
    atoms = _frame(batch, job)
    labeler = batch.labeler
    if runner is not None:
        runner([job_dir])
    result = labeler.parse(job_dir, atoms)
    if not result.ok and result.failure_class != "not_run":
        retry = labeler.prepare_retry(job_dir, atoms, result)
        if retry is not None and runner is not None:
            runner([job_dir])
            result = labeler.parse(job_dir, atoms)
        elif retry is not None:  # prepared but not run: the outcome is not final yet
            todo = batch.backend.retry_hint(batch, retry)
            result.message = (
                f"{result.message}; a retry with a stronger SCF recipe is prepared: {todo}"
            )
            return _outcome(
                job, atoms, _check_plausible(result, len(atoms), batch.cfg.max_force_eV_A)
            )
    return _finish(batch, job, atoms, result, theory_key)[0]


def run_job(batch: LabelBatch, job_id: str) -> JobOutcome:
    """Run job `job_id` of the prepared batch on its backend (export: only read it)."""
    manifest = batch.manifest()
    job = next((j for j in manifest.jobs if j.job_id == job_id), None)
    if job is None:
        raise KeyError(f"{batch.manifest_path}: no job {job_id!r}")
    return label_job(batch, job, batch.backend.runner(batch), manifest.theory.key())


def run_all(batch: LabelBatch) -> None:
    """Run every unfinished job of the batch the way its backend runs them."""
    manifest = batch.manifest()
    key = manifest.theory.key()
    todo = {
        batch.job_dir(j): j
        for j in manifest.jobs
        if _read_record(batch.job_dir(j) / OUTCOME_NAME, key, j.input_sha256) is None
    }
    if not todo:
        return

    def label(d: Path, runner: Runner | None) -> JobOutcome:
        return label_job(batch, todo[d], runner, key)

    def retry(d: Path) -> bool:
        atoms = _frame(batch, todo[d])
        result = batch.labeler.parse(d, atoms)
        return (not result.ok and result.failure_class != "not_run"
                and batch.labeler.prepare_retry(d, atoms, result) is not None)

    batch.backend.run_all(batch, list(todo), label, retry)


# ------------------------------------------------------------------------- collect
def collect(batch: LabelBatch, out_path: Path | None = None) -> LabelingResult:
    """Read every job's outcome, write the labeled frames and failures.csv, count failures.

    Labeled frames keep the provenance of the input frames plus `labeler`, `theory` and
    `job_id`. Failed and unfinished jobs are recorded, never written as frames.
    """
    manifest = batch.manifest()
    key = manifest.theory.key()
    out_path = Path(out_path) if out_path is not None else batch.label_dir / LABELED_NAME
    outcomes: list[JobOutcome] = []
    labeled: list[Atoms] = []
    quarantined: list[Atoms] = []
    for job in manifest.jobs:
        rec = _read_record(batch.job_dir(job) / OUTCOME_NAME, key, job.input_sha256)
        if rec is None:
            outcome = label_job(batch, job, None, key)
            rec = _read_record(batch.job_dir(job) / OUTCOME_NAME, key, job.input_sha256)
        else:
            outcome = rec.outcome
        if (
            outcome.status == "ok"
            and rec is not None
            and rec.forces is not None
            and rec.energy is not None
        ):
            atoms = _frame(batch, job)
            atoms.info.update(labeler=batch.cfg.kind, theory=key, job_id=job.job_id)
            atoms = attach_labels(atoms, rec.energy, np.asarray(rec.forces))
            why = _outlier(np.asarray(rec.forces), batch)
            if why is None:
                labeled.append(atoms)
            else:
                outcome = outcome.model_copy(update={"status": "failed", "failure_class": "outlier_forces",
                                                     "message": why})
                atoms.info["quarantine_reason"] = why
                quarantined.append(atoms)
        outcomes.append(outcome)
    if labeled:
        write_frames(out_path, labeled)
    else:
        atomic_write_text(out_path, "")
    quarantine_path = batch.label_dir / QUARANTINE_NAME
    if quarantined:
        write_frames(quarantine_path, quarantined)
    elif quarantine_path.exists():
        quarantine_path.unlink()
    failed = [o for o in outcomes if o.status == "failed"]
    _write_failures(batch, failed)
    n = len(outcomes)
    by_class = dict(sorted(Counter(str(o.failure_class) for o in failed).items()))
    exceeded = n > 0 and len(failed) / n > batch.cfg.max_failure_fraction
    message = None
    not_run = by_class.get("not_run", 0)
    if exceeded:
        message = (
            f"{len(failed)} of {n} labeling jobs failed ({', '.join(f'{k}: {v}' for k, v in by_class.items())}), "
            f"more than labeler.max_failure_fraction = {batch.cfg.max_failure_fraction:g}; "
            f"details in {batch.label_dir / FAILURES_NAME}"
        )
        message += batch.backend.unfinished_hint(batch, not_run)
    return LabelingResult(
        generation=batch.generation,
        labeler=batch.cfg.kind,
        backend=batch.cfg.backend,
        theory=manifest.theory,
        outcomes=outcomes,
        n_ok=n - len(failed),
        n_failed=len(failed),
        failures_by_class=by_class,
        labeled_extxyz=batch.rel(out_path),
        quarantine_extxyz=batch.rel(quarantine_path) if quarantined else None,
        outlier_force_limit=batch.outlier_force_limit,
        budget_exceeded=exceeded,
        message=message,
    )


def _outlier(forces: np.ndarray, batch: LabelBatch) -> str | None:
    """Why a plausible label is still a force outlier against the dataset (None if it is not)."""
    if batch.outlier_force_limit is None or forces.size == 0:
        return None
    fmax = float(np.max(np.linalg.norm(forces, axis=1)))
    if fmax <= batch.outlier_force_limit:
        return None
    return (f"max |F| = {fmax:.1f} eV/Å above {batch.outlier_force_limit:.3g} eV/Å ({batch.outlier_rule}); "
            "quarantined, not merged")


def _write_failures(batch: LabelBatch, failed: list[JobOutcome]) -> None:
    """failures.csv: one row per failed job, with the walker and kind that produced the frame."""
    jobs = {j.job_id: j for j in batch.manifest().jobs} if failed else {}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["job_id", "frame_id", "walker", "kind", "failure_class", "attempts", "runtime_s", "message"])
    for o in failed:
        info = _frame(batch, jobs[o.job_id]).info if o.job_id in jobs else {}
        w.writerow(
            [
                o.job_id,
                o.frame_id,
                info.get("walker", ""),
                info.get("kind", info.get("source", "")),
                o.failure_class,
                o.attempts,
                "" if o.runtime_s is None else f"{o.runtime_s:.1f}",
                o.message or "",
            ]
        )
    atomic_write_text(batch.label_dir / FAILURES_NAME, buf.getvalue())


def frames_for_labeling(path: Path) -> list[Atoms]:
    """Frames of `path` to label (no labels needed); an empty file gives no frames."""
    path = Path(path)
    if path.exists() and path.stat().st_size == 0:
        return []
    return read_frames(path, require_labels=False, require_cell=False)
