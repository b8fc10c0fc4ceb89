"""Resumable generation steps: the glue between the run directory and the step modules.

Each `*_step` function wraps one library step with skip-if-done (`run_step`: a valid
artifact whose payload files match means the step is finished), checks the step's inputs
before it starts (`eip_al.integrity`) and records its outcome in the generation's
`generation.json`. The Prefect flow (`flows/`) calls exactly these functions, one task
each; nothing here imports Prefect, so the same steps run under any engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from eip_al import integrity
from eip_al.config import ALConfig
from eip_al.integrity import run_step
from eip_al.rundir import ARTIFACT_NAME, RunDir, load_valid
from eip_al.schemas import (
    STEPS,
    DatasetManifest,
    ExplorationResult,
    ExplorationSummary,
    GenerationRecord,
    GenerationReport,
    JobOutcome,
    LabelingJobSet,
    LabelingResult,
    SelectionAudit,
    SelectionResult,
    StepName,
    StepRecord,
    TrainingResult,
)

A = TypeVar("A")


class LabelingBudgetExceeded(RuntimeError):
    """More labeling jobs failed than `labeler.max_failure_fraction` allows."""


# ----------------------------------------------------------------------------- records
def record_path(run: RunDir, gen: int) -> Path:
    return run.gen_dir(gen) / "generation.json"


def record_step(
    run: RunDir,
    gen: int,
    step: StepName,
    status: str,
    artifact: Path | None = None,
    wall_time_s: float | None = None,
    message: str | None = None,
) -> GenerationRecord:
    """Update the step's line in `gen-XXX/generation.json` (atomic rewrite)."""
    path = record_path(run, gen)
    rec = load_valid(path, GenerationRecord) or GenerationRecord(generation=gen, steps=[])
    steps = [s for s in rec.steps if s.step != step]
    steps.append(
        StepRecord(
            step=step,
            status=status,  # type: ignore[arg-type]
            artifact=run.rel(artifact) if artifact is not None else None,
            wall_time_s=wall_time_s,
            message=message,
        )
    )
    steps.sort(key=lambda s: STEPS.index(s.step))
    rec = rec.model_copy(update={"steps": steps})
    rec.write(path)
    return rec


def mark_stop(run: RunDir, gen: int, reason: str) -> None:
    """Record in `generation.json` that the run ends after generation `gen`, and why."""
    path = record_path(run, gen)
    rec = load_valid(path, GenerationRecord) or GenerationRecord(generation=gen, steps=[])
    rec.model_copy(update={"converged": True, "stop_reason": reason}).write(path)


def _after_inputs(
    run: RunDir, gen: int, step: StepName, produce: Callable[[], A], warm_start: bool = False
) -> Callable[[], A]:
    """`produce`, preceded by the check of the step's inputs (`integrity.verify_inputs`)."""

    def checked() -> A:
        integrity.verify_inputs(run, gen, step, warm_start)
        return produce()

    return checked


def _timed_step(
    run: RunDir, gen: int, step: StepName, path: Path, cls: type[A], produce: Callable[[], A],
    warm_start: bool = False,
) -> A:
    """run_step (inputs checked first) + a GenerationRecord line (done / skipped / failed)."""
    t0 = time.perf_counter()
    try:
        result, skipped = run_step(  # type: ignore[type-var]
            path, cls, _after_inputs(run, gen, step, produce, warm_start), run  # type: ignore[arg-type]
        )
    except Exception as exc:
        record_step(run, gen, step, "failed", message=f"{type(exc).__name__}: {exc}")
        raise
    if not skipped:
        record_step(run, gen, step, "done", path, time.perf_counter() - t0)
    return result


# ----------------------------------------------------------------------------- steps
def seed_step(cfg: ALConfig, run: RunDir) -> DatasetManifest:
    """Generation-0 dataset (`<run>/seed/`)."""
    from eip_al.seed import make_seed

    result, _ = run_step(run.seed_dir / ARTIFACT_NAME, DatasetManifest, lambda: make_seed(cfg, run), run)
    return result


def train_step(cfg: ALConfig, run: RunDir, gen: int) -> TrainingResult:
    from eip_al.train import train_generation

    return _timed_step(
        run, gen, "train", run.artifact_path(gen, "train"), TrainingResult,
        lambda: train_generation(cfg, run, gen), warm_start=cfg.train.warm_start,
    )


def walker_names(cfg: ALConfig) -> list[str]:
    from eip_al.explore import walker_names as names

    return names(cfg)


def explore_batched(cfg: ALConfig) -> bool:
    """Whether the generation's walkers run as one batch (`explore.batched`, 'auto': on a GPU)."""
    from eip_al.explore.walker import explore_batched as batched

    return batched(cfg)


def walker_step(cfg: ALConfig, run: RunDir, gen: int, name: str) -> ExplorationResult:
    """One exploration walker; its own artifact `explore/<name>.json` makes it resumable."""
    return walkers_step(cfg, run, gen, [name])[0]


def walkers_step(cfg: ALConfig, run: RunDir, gen: int, names: list[str]) -> list[ExplorationResult]:
    """Several walkers (batched on one model with `explore.batched`), each resumable by its
    own artifact `explore/<name>.json`."""
    from eip_al.explore import run_walkers

    return _after_inputs(run, gen, "explore", lambda: run_walkers(cfg, run, gen, names))()


def explore_summary_step(
    cfg: ALConfig, run: RunDir, gen: int, results: list[ExplorationResult]
) -> ExplorationSummary:
    t0 = time.perf_counter()
    path = run.artifact_path(gen, "explore")
    summary, skipped = run_step(
        path, ExplorationSummary, lambda: ExplorationSummary(generation=gen, walkers=results), run
    )
    if not skipped:
        wall = sum(r.wall_time_s for r in results)
        record_step(run, gen, "explore", "done", path, wall or time.perf_counter() - t0)
    return summary


def explore_step(cfg: ALConfig, run: RunDir, gen: int) -> ExplorationSummary:
    """All walkers: batched with `explore.batched`, else one after the other."""
    results = walkers_step(cfg, run, gen, walker_names(cfg))
    return explore_summary_step(cfg, run, gen, results)


def select_step(cfg: ALConfig, run: RunDir, gen: int) -> SelectionResult:
    from eip_al.select import select_generation

    return _timed_step(
        run, gen, "select", run.artifact_path(gen, "select"), SelectionResult,
        lambda: select_generation(cfg, run, gen),
    )


def _labeled(run: RunDir, gen: int) -> bool:
    """True when generation `gen`'s labeling already finished (its artifact is valid)."""
    return load_valid(run.artifact_path(gen, "label"), LabelingResult) is not None


def label_prepare_step(cfg: ALConfig, run: RunDir, gen: int) -> LabelingJobSet:
    """Write the jobs; after labeling finished, the stored manifest (a rerun rewrites nothing)."""
    from eip_al.label import prepare_label_jobs

    manifest = run.step_dir(gen, "label") / "jobs.json"
    if _labeled(run, gen) and manifest.is_file():
        return LabelingJobSet.load(manifest)
    integrity.verify_inputs(run, gen, "label")
    return prepare_label_jobs(cfg, run, gen)


def label_job_step(cfg: ALConfig, run: RunDir, gen: int, job_id: str) -> JobOutcome:
    from eip_al.label import run_label_job

    return run_label_job(cfg, run, gen, job_id)


def label_run_all_step(cfg: ALConfig, run: RunDir, gen: int) -> None:
    """Run all prepared jobs at once (one Slurm array; export: nothing)."""
    from eip_al.label import run_label_jobs

    if not _labeled(run, gen):
        run_label_jobs(cfg, run, gen)


def label_collect_step(cfg: ALConfig, run: RunDir, gen: int) -> LabelingResult:
    """Collect all job results; refuse to go on when failures exceed the budget."""
    from eip_al.label import collect_labels

    path = run.artifact_path(gen, "label")
    found = integrity.finished(run, path, LabelingResult)
    if found is not None:
        return found
    t0 = time.perf_counter()
    result = collect_labels(cfg, run, gen)
    if result.budget_exceeded:
        msg = (
            f"generation {gen}: {result.n_failed} of {result.n_ok + result.n_failed} labeling jobs "
            f"failed or did not run ({result.failures_by_class}), more than "
            f"labeler.max_failure_fraction={cfg.labeler.max_failure_fraction}. Finished labels "
            f"are kept in {run.step_dir(gen, 'label')}. "
            + (result.message or "Fix the cause (see label/failures.csv) and rerun.")
        )
        record_step(run, gen, "label", "failed", message=msg)
        raise LabelingBudgetExceeded(msg)
    result = integrity.seal(result, run.root)
    result.write(path)
    record_step(run, gen, "label", "done", path, time.perf_counter() - t0)
    return result


def label_step(cfg: ALConfig, run: RunDir, gen: int) -> LabelingResult:
    """Prepare, run (on the configured backend) and collect every labeling job."""
    label_prepare_step(cfg, run, gen)
    label_run_all_step(cfg, run, gen)
    return label_collect_step(cfg, run, gen)


def merge_step(cfg: ALConfig, run: RunDir, gen: int) -> DatasetManifest:
    from eip_al.data import merge_generation

    return _timed_step(
        run, gen, "merge", run.artifact_path(gen, "merge"), DatasetManifest,
        lambda: merge_generation(cfg, run, gen),
    )


def audit_step(cfg: ALConfig, run: RunDir, gen: int) -> SelectionAudit | None:
    """The selection audit of generation `gen` (`gen-XXX/audit/`, written by `eip_al.audit`):
    the selecting model on its fresh labels. Skipped (None, recorded as such) when the report
    audit and the stop rule's force-error criterion are both off, or nothing was labeled."""
    from eip_al.audit import selection_audit

    path = run.artifact_path(gen, "audit")
    found = integrity.finished(run, path, SelectionAudit)
    if found is not None:
        return found
    if not cfg.report.audit and cfg.selection.converge_force_error is None:
        record_step(run, gen, "audit", "skipped", message="report.audit is off and no converge_force_error")
        return None
    t0 = time.perf_counter()
    try:
        integrity.verify_inputs(run, gen, "audit")
        result = selection_audit(run, gen)
    except Exception as exc:
        record_step(run, gen, "audit", "failed", message=f"{type(exc).__name__}: {exc}")
        raise
    if result is None:
        record_step(run, gen, "audit", "skipped", message="no fresh labels to audit")
    else:
        record_step(run, gen, "audit", "done", path, time.perf_counter() - t0)
    return result


def report_step(cfg: ALConfig, run: RunDir, gen: int) -> GenerationReport:
    from eip_al.report import report_generation

    return _timed_step(
        run, gen, "report", run.artifact_path(gen, "report"), GenerationReport,
        lambda: report_generation(cfg, run, gen),
    )


def stop_reason(cfg: ALConfig, run: RunDir, gen: int) -> str | None:
    """Why the run should end after generation `gen` (None: go on).

    `eip_al.stop.stop_decision`: the selection's candidate-fraction signal and, when
    `selection.converge_force_error` is set, the fresh labels' force error (docs/calibration.md).
    """
    from eip_al.stop import stop_decision

    decision = stop_decision(cfg, run, gen)
    if decision.stop:
        reason = f"{decision.criterion}: {decision.reason}"
        mark_stop(run, gen, reason)
        return reason
    return None


def run_generation(cfg: ALConfig, run: RunDir, gen: int) -> str | None:
    """All steps of one generation in order (no engine); returns a stop reason or None."""
    train_step(cfg, run, gen)
    explore_step(cfg, run, gen)
    select_step(cfg, run, gen)
    label_step(cfg, run, gen)
    merge_step(cfg, run, gen)
    audit_step(cfg, run, gen)
    report_step(cfg, run, gen)
    return stop_reason(cfg, run, gen)


def run_all(cfg: ALConfig, run: RunDir, log: Callable[[str], None] = print) -> tuple[int, str | None]:
    """Seed, then generations until done or converged, then the run summary — the same steps
    as the Prefect flow, in order, without any engine (`eip-al run --engine none`).
    Returns (generations done, stop reason)."""
    from eip_al.report import run_summary

    seed = seed_step(cfg, run)
    log(f"seed dataset: {seed.n_frames} frames")
    done, stop = 0, None
    for gen in range(cfg.generations):
        t0 = time.perf_counter()
        stop = run_generation(cfg, run, gen)
        done = gen + 1
        log(f"generation {gen} done in {time.perf_counter() - t0:.0f} s")
        if stop:
            log(f"stopping after generation {gen}: {stop}")
            break
    run_summary(run)
    return done, stop
