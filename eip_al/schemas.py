"""Contracts between the steps: one pydantic model per step artifact.

Every artifact is written as JSON into the run directory, atomically and LAST, by the
step that produced it; a step whose artifact exists and validates is skipped on rerun.
All paths inside artifacts are relative to the run directory, so a run directory can be
moved or copied as a whole.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from eip_al.atomic import atomic_write_text

SCHEMA_VERSION = 1

StepName = Literal["train", "explore", "select", "label", "merge", "audit", "report"]
STEPS: tuple[StepName, ...] = ("train", "explore", "select", "label", "merge", "audit", "report")

Source = Literal["seed", "md", "udd", "user"]
FailureClass = Literal[
    "not_run",
    "crashed",
    "walltime",
    "scf_not_converged",
    "truncated",
    "inconsistent",
    "implausible_forces",
    "outlier_forces",  # plausible alone, but far outside the dataset's forces: quarantined, not merged
    "injected",
]

A = TypeVar("A", bound="Artifact")


def _now() -> datetime:
    return datetime.now(UTC)


class Strict(BaseModel):
    """Base for every schema: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FileDigest(Strict):
    """Size and sha256 of one payload file, recorded when its artifact is written."""

    size: int  # bytes
    sha256: str


class Artifact(Strict):
    """Base of every step artifact: versioned, timestamped, JSON round-trip safe.

    `files` maps each payload file the artifact points to (run-relative path) to its size
    and sha256 (`eip_al.integrity`); artifacts written before eip-al recorded them have none.
    """

    artifact: ClassVar[str] = "artifact"
    payload_fields: ClassVar[tuple[str, ...]] = ()  # fields naming the files this step wrote
    schema_version: int = SCHEMA_VERSION
    created_at: datetime = Field(default_factory=_now)
    files: dict[str, FileDigest] = Field(default_factory=dict)

    def payload_paths(self) -> list[str]:
        """Run-relative paths of the files this artifact points to (its `payload_fields`)."""
        out: list[str] = []
        for name in self.payload_fields:
            value = getattr(self, name)
            out += [value] if isinstance(value, str) else list(value or [])
        return out

    def write(self, path: Path) -> Path:
        """Write this artifact as JSON atomically (temp file + rename)."""
        atomic_write_text(Path(path), self.model_dump_json(indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls: type[A], path: Path) -> A:
        """Load and validate an artifact; raises ValueError naming the file if invalid."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read {cls.__name__}: {exc}") from exc
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"{path}: schema_version {data.get('schema_version')!r} "
                f"!= {SCHEMA_VERSION} expected by this eip-al"
            )
        try:
            return cls.model_validate(data)
        except Exception as exc:  # pydantic.ValidationError
            raise ValueError(f"{path}: invalid {cls.__name__}: {exc}") from exc


class TheoryFingerprint(Strict):
    """Level of theory of a label; frames with different fingerprints never mix silently."""

    code: str  # "cp2k" | "mock-qspcfw" | "external"
    method: str  # e.g. "PBE-D3(BJ)" or "q-SPC/Fw"
    basis: dict[str, str] = Field(default_factory=dict)  # element -> basis set
    potential: dict[str, str] = Field(default_factory=dict)  # element -> pseudopotential
    cutoff_ry: float | None = None
    rel_cutoff_ry: float | None = None
    eps_scf: float | None = None
    extra: dict[str, str] = Field(default_factory=dict)

    def key(self) -> str:
        """A short stable hash of the fingerprint (what frames carry in `theory`)."""
        import hashlib

        blob = self.model_dump_json(exclude_none=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- train
class UQScores(Strict):
    """How well σ ranks and predicts force errors (docs/eip-method §4, docs/calibration.md).

    Spearman and ROC-AUC (top-20 % errors are "bad") per atom and per configuration; the
    miscalibration area is the count-weighted mean |mean error − prediction| over
    equal-count bins, per atom, eV/Å, for raw σ and for the calibrated expected error.
    """

    spearman_atom: float | None = None
    roc_auc_atom: float | None = None
    spearman_config: float | None = None
    roc_auc_config: float | None = None
    miscalibration_area: float | None = None
    miscalibration_area_calibrated: float | None = None


class ValidationMetrics(UQScores):
    """Metrics on a labelled set (on the split the calibration was fitted on: in-sample)."""

    n_frames: int
    energy_mae_per_atom: float  # eV/atom
    force_mae: float  # eV/Å, per component
    force_rmse: float  # eV/Å, per component
    sigma_mean: float  # mean per-atom epistemic sigma, eV/Å
    aleatoric_mean: float  # mean per-atom aleatoric sigma, eV/Å
    # medians: robust references (a few extrapolating atoms can lift a mean by orders of magnitude)
    sigma_median: float | None = None  # None in artifacts written before the field existed
    aleatoric_median: float | None = None
    epistemic_share_p90: float | None = None  # 90th percentile of per-atom epistemic/aleatoric σ (= 1/√ν)


class TrainingResult(Artifact):
    artifact: ClassVar[str] = "training"
    payload_fields: ClassVar[tuple[str, ...]] = ("checkpoint", "metrics_csv", "calibration")
    generation: int
    checkpoint: str  # relative path of the best checkpoint
    metrics_csv: str  # per-epoch metrics
    dataset: str  # relative path of the training dataset extxyz
    n_train: int
    n_valid: int
    epochs_run: int
    best_epoch: int
    stopped_reason: Literal["max_epochs", "early_stopping", "time_limit"]
    warm_started_from: str | None = None
    device: str
    wall_time_s: float
    valid: ValidationMetrics
    element_energies: dict[str, float]  # eV per atom of each element (least squares fit)
    calibration: str | None = None  # calibration.json beside the checkpoint (also inside it)


# ---------------------------------------------------------------------------- explore
class ExplorationResult(Artifact):
    """One walker's trajectory summary."""

    artifact: ClassVar[str] = "exploration"
    payload_fields: ClassVar[tuple[str, ...]] = ("log_csv", "frames_extxyz")
    generation: int
    walker: str  # e.g. "md-300K-0", "udd-300K-0"
    kind: str  # the bias (registries.BIASES): md | udd
    integrator: str | None = None  # registries.WALKERS key (None: written before integrators had names)
    ensemble: Literal["nvt", "npt"] = "nvt"
    pressure_bar: float | None = None  # npt only
    temperature_K: float
    steps_requested: int
    steps_run: int
    simulated_time_fs: float
    collapsed: bool
    collapse_step: int | None = None
    collapse_time_fs: float | None = None
    collapse_reason: str | None = None
    n_candidates: int
    log_csv: str
    frames_extxyz: str
    # over the logged steps, of the configuration σ (log column `sigma`, eV/Å); the log's
    # `sigma_max` column is different: the largest per-atom σ of one step
    sigma_mean: float | None = None
    sigma_max: float | None = None
    energy_mean: float | None = None
    energy_std: float | None = None
    bias_ratio_mean: float | None = None  # mean |F_bias|/|F| (udd only)
    # udd only: median over steps of the per-step median over atoms of |F̃_b,i|/|F_i|, and the max
    bias_ratio_median: float | None = None
    bias_ratio_max: float | None = None
    udd_A: float | None = None  # the amplitude used (eV): configured, or scaled to udd_target_ratio
    udd_target_ratio: float | None = None
    # over the logged steps, g/cm³ (None without a 3D cell or in logs written before density)
    density_mean: float | None = None
    density_min: float | None = None
    density_max: float | None = None
    min_pair_distance: dict[str, float] | None = None  # Å, the screen this walker ran under
    wall_time_s: float


class ExplorationSummary(Artifact):
    """All walkers of one generation."""

    artifact: ClassVar[str] = "exploration-summary"
    generation: int
    walkers: list[ExplorationResult]

    def payload_paths(self) -> list[str]:
        return [p for w in self.walkers for p in w.payload_paths()]


# ---------------------------------------------------------------------------- select
class TrustFractions(Strict):
    n: int
    accurate: float
    candidate: float
    failed: float
    unphysical: float = 0.0


class SelectionResult(Artifact):
    artifact: ClassVar[str] = "selection"
    payload_fields: ClassVar[tuple[str, ...]] = ("selected_extxyz", "decisions_csv")
    generation: int
    lo: float  # eV/Å, configuration sigma
    hi: float
    lo_source: Literal["config", "adaptive"]
    n_pool: int
    n_unphysical: int
    unphysical_by_reason: dict[str, int] = {}  # per element pair ('O-O') or rule
    n_accurate: int
    n_candidate: int
    n_failed: int
    n_selected: int
    n_requested: int
    per_walker: dict[str, TrustFractions]
    overall: TrustFractions
    selected_extxyz: str
    decisions_csv: str  # one row per pooled frame: frame_id, walker, step, sigma, band, decision, reason
    n_collapsed_walkers: int = 0  # walkers whose trajectory collapsed (blocks convergence)
    converged: bool = False  # candidate fraction below limit for k consecutive generations
    converged_reason: str | None = None
    scale: Literal["raw", "calibrated"] = "raw"  # what lo/hi (and the ranking) apply to
    lo_raw: float | None = None  # lo/hi on the raw σ scale (approximate inverse when scale=calibrated)
    hi_raw: float | None = None
    lo_calibrated: float | None = None  # lo/hi as expected force error, eV/Å (None: no calibration)
    hi_calibrated: float | None = None
    n_label_noise: int = 0  # pooled frames flagged as label noise (candidates among them not selected)
    noise_aleatoric_min: float | None = None  # eV/Å, aleatoric level of the flag rule (None: off)
    noise_max_epistemic_ratio: float | None = None  # epistemic/aleatoric limit of the flag rule


class SelectionAudit(Artifact, UQScores):
    """Fresh labels vs the model that selected them (`gen-XXX/audit/`, docs/calibration.md)."""

    artifact: ClassVar[str] = "selection-audit"
    payload_fields: ClassVar[tuple[str, ...]] = ("frames_csv",)
    generation: int
    checkpoint: str  # the selecting model
    labeled_extxyz: str
    frames_csv: str | None = None  # per frame: sigma_config, calibrated_config, force_error_config
    n_frames: int
    n_atoms: int
    force_error_config_mean: float  # mean over frames of the mean per-atom force error, eV/Å
    force_error_config_max: float
    sigma_config_mean: float
    calibrated_config_mean: float | None = None


# ---------------------------------------------------------------------------- label
class LabelingJob(Strict):
    job_id: str  # stable, e.g. "000123"
    frame_id: str
    job_dir: str
    input_sha256: str


class LabelingJobSet(Artifact):
    artifact: ClassVar[str] = "labeling-jobs"
    generation: int
    labeler: str  # a key of eip_al.registries.LABELERS
    backend: str  # a key of eip_al.registries.BACKENDS
    theory: TheoryFingerprint
    jobs: list[LabelingJob]


class JobOutcome(Strict):
    job_id: str
    frame_id: str
    status: Literal["ok", "failed"]
    failure_class: FailureClass | None = None
    message: str | None = None
    runtime_s: float | None = None
    energy_per_atom: float | None = None  # eV/atom
    attempts: int = 1


class LabelingResult(Artifact):
    artifact: ClassVar[str] = "labeling"
    payload_fields: ClassVar[tuple[str, ...]] = ("labeled_extxyz",)
    generation: int
    labeler: str  # a key of eip_al.registries.LABELERS
    backend: str  # a key of eip_al.registries.BACKENDS
    theory: TheoryFingerprint
    outcomes: list[JobOutcome]
    n_ok: int
    n_failed: int
    failures_by_class: dict[str, int]
    labeled_extxyz: str
    # labels quarantined as force outliers (kept with their labels for inspection, not merged)
    quarantine_extxyz: str | None = None
    outlier_force_limit: float | None = None  # eV/Å, the max |F| above which a label was quarantined
    budget_exceeded: bool = False
    message: str | None = None  # why the generation should stop, or what the user must do next


# ---------------------------------------------------------------------------- merge
class DatasetManifest(Artifact):
    artifact: ClassVar[str] = "dataset"
    payload_fields: ClassVar[tuple[str, ...]] = ("dataset_extxyz",)
    generation: int  # -1 for the seed dataset
    dataset_extxyz: str
    n_frames: int
    counts_by_source: dict[str, int]
    counts_by_generation: dict[str, int]
    split_counts: dict[str, int]  # train / valid / test
    theory: TheoryFingerprint
    sha256: str  # of the dataset file (also in `files`, with its size)
    n_duplicates_dropped: int = 0
    parent: str | None = None  # relative path of the previous manifest
    counts_by_theory: dict[str, int] = Field(default_factory=dict)  # theory key -> frames
    notes: list[str] = Field(default_factory=list)  # e.g. an allowed theory mismatch


# ---------------------------------------------------------------------------- report
class GenerationReport(Artifact):
    artifact: ClassVar[str] = "report"
    payload_fields: ClassVar[tuple[str, ...]] = ("report_md", "report_html", "figures", "tables")
    generation: int
    report_md: str
    report_html: str
    figures: list[str]
    tables: list[str]
    numbers: dict[str, float | int | str | None]  # the headline numbers shown in the report


class StepRecord(Strict):
    step: StepName
    status: Literal["pending", "done", "failed", "skipped"]
    artifact: str | None = None
    wall_time_s: float | None = None
    message: str | None = None


class GenerationRecord(Artifact):
    """What happened in one generation, step by step; written after each step."""

    artifact: ClassVar[str] = "generation"
    generation: int
    steps: list[StepRecord]
    converged: bool = False
    stop_reason: str | None = None


ARTIFACT_TYPES: tuple[type[Artifact], ...] = (
    TrainingResult,
    ExplorationResult,
    ExplorationSummary,
    SelectionResult,
    SelectionAudit,
    LabelingJobSet,
    LabelingResult,
    DatasetManifest,
    GenerationReport,
    GenerationRecord,
)


def json_schemas() -> dict[str, dict]:
    """JSON Schema of every artifact, keyed by class name (for `eip-al schema`)."""
    return {cls.__name__: cls.model_json_schema() for cls in ARTIFACT_TYPES}
