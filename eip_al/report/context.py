"""What the report's sections share while one generation's report is built (`Context`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from ase import Atoms

from eip_al.audit import Predictor
from eip_al.config import ALConfig
from eip_al.io import FrameError, read_frames
from eip_al.report.render import ReportWriter
from eip_al.rundir import RunDir
from eip_al.schemas import (
    Artifact,
    ExplorationResult,
    LabelingResult,
    SelectionResult,
    StepName,
    TrainingResult,
)
from eip_al.uq import Calibration

A = TypeVar("A", bound=Artifact)
Number = float | int | str | None

LOG_REQUIRED = ("time_fs", "energy", "sigma")  # columns a walker log must have
KINDS = ("md", "udd")


def clean(value: Any) -> Number:
    """A JSON-safe scalar for `numbers`: NaN/inf become None, numpy scalars plain."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | np.integer):
        return int(value)
    value = float(value)
    return value if np.isfinite(value) else None


def mean_of(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def load_step(run: RunDir, gen: int, step: StepName, cls: type[A]) -> tuple[A | None, str | None]:
    """The step's artifact, or None and a sentence saying why it is not usable."""
    path = run.artifact_path(gen, step)
    if not path.exists():
        return None, f"step `{step}` has not run (no `{run.rel(path)}`)"
    try:
        return cls.load(path), None
    except ValueError as exc:
        return None, f"step `{step}` artifact is invalid: {exc}"


def read_optional_frames(run: RunDir, rel: str, *, labels: bool) -> tuple[list[Atoms], str | None]:
    """Frames of a file an artifact names; an empty or missing file gives [] and a reason."""
    path = run.abs(rel)
    if not path.exists():
        return [], f"`{rel}` not found"
    if path.stat().st_size == 0:
        return [], None
    try:
        return read_frames(path, require_labels=labels, require_cell=False), None
    except FrameError as exc:
        return [], str(exc)


@dataclass
class Context:
    """What the sections share while one report is built."""

    cfg: ALConfig
    run: RunDir
    gen: int
    predict: Predictor | None
    w: ReportWriter
    numbers: dict[str, Number] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    invalid: set[str] = field(default_factory=set)  # steps whose artifact exists but is unusable
    train: TrainingResult | None = None
    walkers: list[ExplorationResult] = field(default_factory=list)
    selection: SelectionResult | None = None
    labeling: LabelingResult | None = None
    calibration: Calibration | None = None
    _frames: dict[tuple[str, bool], tuple[list[Atoms], str | None]] = field(default_factory=dict)

    def frames(self, rel: str, *, labels: bool) -> tuple[list[Atoms], str | None]:
        """`read_optional_frames`, read once per report: several sections use the same files
        (walker frames, the selection, new labels, the dataset). Callers only read them."""
        key = (rel, labels)
        if key not in self._frames:
            self._frames[key] = read_optional_frames(self.run, rel, labels=labels)
        return self._frames[key]

    def put(self, **values: Any) -> None:
        for key, value in values.items():
            self.numbers[key] = clean(value)

    def load(self, step: StepName, cls: type[A]) -> tuple[A | None, str | None]:
        """`load_step`, remembering an existing but unusable artifact for the status table."""
        art, problem = load_step(self.run, self.gen, step, cls)
        if art is None and self.run.artifact_path(self.gen, step).exists():
            self.invalid.add(step)
        return art, problem
