"""Labelers that compute in Python, one job directory per frame (mock, ase, xtb).

A job directory holds `structure.extxyz` (the bare frame), `job.json` (frame id, labeler
kind and its settings) and `run.sh`; labeling writes `result.json` atomically (skipped when
already there, so a killed run redoes nothing finished) and `parse` reads it back. `local`
labels in-process; `slurm` and `export` run `run.sh`, which runs
`python -m <job_module>` (the Python that prepared the job) in the job directory and
leaves `run.status`. The same `_label` runs in both places, so labels do not depend on
where a job ran.
"""

from __future__ import annotations

import json
import sys
import time
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from pydantic import BaseModel
from rich.progress import track

from eip_al.atomic import atomic_write_text
from eip_al.io import frame_id, read_frames, write_frames
from eip_al.label.backends.script import job_script_text
from eip_al.label.base import JobResult, Labeler
from eip_al.label.parse import (
    STATUS_NAME,
    STDERR_NAME,
    read_status,
    stopped_by_time_limit,
    tail_lines,
)
from eip_al.registries import LABELERS

STRUCTURE_FILE = "structure.extxyz"
JOB_FILE = "job.json"
RESULT_FILE = "result.json"
SCRIPT_NAME = "run.sh"


class JobFileLabeler(Labeler):
    """Job plumbing shared by the in-Python labelers; a subclass says how to label one frame."""

    config: BaseModel  # the labeler's settings section (what job.json carries)
    job_module: str = "eip_al.label.job"  # what run.sh runs
    omp_num_threads: int | None = None  # OMP_NUM_THREADS in run.sh (None: inherit)

    @abstractmethod
    def compute(self, atoms: Atoms, fid: str) -> dict[str, Any]:
        """`ok=True, energy, forces` (eV, eV/Å as a list), or `failure_class, message`."""

    @abstractmethod
    def script_title(self) -> str:
        """The first comment line of run.sh (no newline)."""

    def job_record(self, fid: str) -> dict[str, Any]:
        """job.json: the frame id, the kind and its settings (`eip_al.label.job` rebuilds the labeler)."""
        section = LABELERS[self.kind].section
        settings = {section: self.config.model_dump(mode="json")} if section else {}
        return {"frame_id": fid, "kind": self.kind, **settings}

    def prepare(self, atoms: Atoms, job_dir: Path) -> None:
        """Write the frame (without any attached labels), job.json and run.sh into `job_dir`."""
        job_dir = Path(job_dir)
        frame = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        write_frames(job_dir / STRUCTURE_FILE, [frame])
        atomic_write_text(job_dir / JOB_FILE, json.dumps(self.job_record(frame_id(atoms))) + "\n")
        argv = [sys.executable, "-m", self.job_module]
        script = job_script_text(
            argv, self.script_title(), [RESULT_FILE], self.omp_num_threads, what="the labeler"
        )
        atomic_write_text(job_dir / SCRIPT_NAME, script)

    def run_script(self, job_dir: Path) -> Path:
        """run.sh: labels this job outside this process (Slurm, export)."""
        return Path(job_dir) / SCRIPT_NAME

    def execute(self, job_dirs: list[Path]) -> None:
        """Label every prepared job that has no result yet (idempotent)."""
        todo = [Path(d) for d in job_dirs if not _valid_result(Path(d) / RESULT_FILE)]
        for job_dir in track(
            todo, description=f"{self.kind} labels", disable=len(todo) < 50, transient=True
        ):
            if (job_dir / STRUCTURE_FILE).exists() and (job_dir / JOB_FILE).exists():
                result = self._label(job_dir)
                atomic_write_text(job_dir / RESULT_FILE, json.dumps(result) + "\n")

    def _label(self, job_dir: Path) -> dict[str, Any]:
        """The result record of one job: frame id, `compute`'s fields, runtime."""
        start = time.perf_counter()
        fid = json.loads((job_dir / JOB_FILE).read_text())["frame_id"]
        record: dict[str, Any] = {"frame_id": fid, "ok": False}
        atoms = read_frames(job_dir / STRUCTURE_FILE, require_labels=False, require_cell=False)[0]
        record.update(self.compute(atoms, fid))
        record["runtime_s"] = time.perf_counter() - start
        return record

    def parse(self, job_dir: Path, atoms: Atoms) -> JobResult:
        """Read `result.json`; a missing, truncated or mismatched result is a failure."""
        job_dir = Path(job_dir)
        job_id = job_dir.name
        path = job_dir / RESULT_FILE
        if not path.exists():
            status = read_status(job_dir / STATUS_NAME)
            if status is None or status.signal == "INT":
                return JobResult(job_id, ok=False, failure_class="not_run", message=f"{path}: no result")
            stopped = stopped_by_time_limit(status)
            how = f"signal {status.signal}" if status.signal else f"exit code {status.exit_code}"
            tail = tail_lines(job_dir / STDERR_NAME)
            return JobResult(
                job_id, ok=False, failure_class="walltime" if stopped else "crashed", runtime_s=status.runtime_s,
                message=f"{path}: no result; run.sh ended with {how}" + (f": {tail}" if tail else ""),
            )
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return JobResult(job_id, ok=False, failure_class="truncated", message=f"{path}: {exc}")
        runtime = record.get("runtime_s")
        if record.get("frame_id") != frame_id(atoms):
            return JobResult(
                job_id,
                ok=False,
                failure_class="inconsistent",
                runtime_s=runtime,
                message=f"{path}: result is for frame {record.get('frame_id')}, not {frame_id(atoms)}",
            )
        if not record.get("ok"):
            return JobResult(
                job_id,
                ok=False,
                failure_class=record.get("failure_class", "crashed"),
                message=record.get("message"),
                runtime_s=runtime,
            )
        forces = np.asarray(record["forces"], dtype=float)
        if forces.shape != (len(atoms), 3):
            return JobResult(
                job_id,
                ok=False,
                failure_class="inconsistent",
                runtime_s=runtime,
                message=f"{path}: forces have shape {forces.shape}, frame has {len(atoms)} atoms",
            )
        return JobResult(
            job_id, ok=True, energy=float(record["energy"]), forces=forces, runtime_s=runtime
        )


def _valid_result(path: Path) -> bool:
    """True if `path` holds a complete result record (atomic writes make this the norm)."""
    try:
        return "ok" in json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
