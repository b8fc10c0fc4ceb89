"""The labeler interface: generate jobs → execute → parse.

Every labeler kind (`eip_al.registries.LABELERS`: mock, cp2k, ase, xtb) implements `Labeler`;
the generation step (`eip_al.label.label_generation`) and `eip-al label` only talk to this
interface, so CI swaps CP2K for the mock by one config line (`labeler.kind: mock`).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from eip_al.config import ConfigError, LabelerConfig
from eip_al.registries import LABELERS
from eip_al.schemas import FailureClass, TheoryFingerprint


def import_object(path: str, field: str) -> Any:
    """The object "module:Qualname" names; ConfigError naming config `field` if it cannot be imported."""
    module, _, qualname = path.partition(":")
    try:
        found: Any = importlib.import_module(module)
    except Exception as exc:  # a missing module, or one that fails while importing
        raise ConfigError(f"{field}: cannot import {path!r}: {type(exc).__name__}: {exc}") from None
    try:
        for part in qualname.split("."):
            found = getattr(found, part)
    except AttributeError:
        raise ConfigError(f"{field}: cannot import {path!r}: module {module!r} has no {qualname!r}") from None
    return found


def packaged_template(*parts: str) -> Path:
    """A template shipped in the package (`eip_al/templates/...`, package data); in the
    checkout that is a link to the top-level `templates/`, where the files live."""
    return Path(str(files("eip_al").joinpath("templates", *parts)))


def template_path(path: Path | str) -> Path:
    """`path` where it exists (absolute, or relative to the working directory); else, for a
    relative `templates/...` path, the copy shipped in the package (an installed eip-al
    run outside the checkout)."""
    p = Path(path)
    if p.exists() or p.is_absolute() or not p.parts or p.parts[0] != "templates":
        return p
    shipped = packaged_template(*p.parts[1:])
    return shipped if shipped.exists() else p


@dataclass
class JobResult:
    """What parsing one job gives: labels on success, a failure class otherwise."""

    job_id: str
    ok: bool
    energy: float | None = None  # eV
    forces: np.ndarray | None = None  # eV/Å, (N, 3)
    failure_class: FailureClass | None = None
    message: str | None = None
    runtime_s: float | None = None
    attempts: int = 1  # 2 when a retry with a stronger recipe ran


class Labeler(ABC):
    """A source of reference energies and forces for frames."""

    kind: str

    @abstractmethod
    def theory(self) -> TheoryFingerprint:
        """The level of theory every label of this labeler carries."""

    @abstractmethod
    def prepare(self, atoms: Atoms, job_dir: Path) -> None:
        """Write everything job `job_dir` needs to run (input, structure, run script)."""

    @abstractmethod
    def execute(self, job_dirs: list[Path]) -> None:
        """Run the prepared jobs (may be a no-op for `export`); must be idempotent."""

    @abstractmethod
    def parse(self, job_dir: Path, atoms: Atoms) -> JobResult:
        """Read a finished (or failed, or never run) job; never raises for job failures."""

    def check_frame(self, atoms: Atoms, where: str) -> None:
        """Raise eip_al.io.FrameError (naming `where`) if this labeler cannot label the frame.

        Called for every frame before any job is written; the default accepts all.
        """
        return None

    def check_backend(self, backend: str) -> None:
        """Raise ConfigError if this labeler cannot run on `backend` here; the default accepts all."""
        return None

    @classmethod
    def describe(cls, lab: LabelerConfig) -> str:
        """The run plan's labeler line (`eip-al check`)."""
        return lab.kind

    @classmethod
    def preflight(cls, lab: LabelerConfig, runs_here: bool, elements: frozenset[str] | None) -> list[str]:
        """Problems with these settings, found before any work starts (`eip-al check`).

        `runs_here`: the backend runs the labeler on this machine; `elements`: the system's
        symbols (None if unknown). The default builds the labeler and asks `check_backend`.
        """
        section = LABELERS[lab.kind].section
        try:
            labeler = cls(getattr(lab, section)) if section else cls()  # type: ignore[call-arg]
            labeler.check_backend(lab.backend)
        except ConfigError as exc:
            return [str(exc)]
        return []

    @abstractmethod
    def run_script(self, job_dir: Path) -> Path:
        """The script that runs this job's current attempt outside this process (Slurm, export)."""

    def is_finished(self, job_dir: Path) -> bool:
        """False while the job may still be running elsewhere (its result is not final yet).

        The default suits in-process labelers: after `execute` returns, `parse` is final.
        """
        return True

    def prepare_retry(self, job_dir: Path, atoms: Atoms, failed: JobResult) -> Path | None:
        """Prepare a second attempt on frame `atoms` with a stronger recipe after `failed`.

        Returns the directory whose run script runs the retry (executed like a job
        directory), or None when this failure is not worth retrying (the default).
        """
        return None
