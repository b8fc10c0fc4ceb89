"""Labeling: reference energies (eV) and forces (eV/Å) for selected frames.

One config line picks the labeler (`labeler.kind`: mock | cp2k | ase | xtb, the registry
`eip_al.registries.LABELERS`) and one the backend
(`labeler.backend: local | slurm | export`). The generation step is prepare → run every
job → collect (`label_generation`); the Prefect flow calls the three parts itself so jobs
run as parallel tasks. Layout of `gen-XXX/label/`: see `eip_al.label.jobs`; CP2K job
contents: `eip_al.label.cp2k`; failure classes: `eip_al.label.parse`; docs/labeling.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eip_al import integrity
from eip_al.atomic import atomic_write_text
from eip_al.config import ALConfig, LabelerConfig
from eip_al.io import read_frames
from eip_al.label.base import JobResult, Labeler
from eip_al.label.jobs import (
    FAILURES_NAME,
    LabelBatch,
    collect,
    frames_for_labeling,
    get_labeler,
    prepare_jobs,
    run_all,
    run_job,
)
from eip_al.rundir import RunDir, RunDirError, load_valid
from eip_al.schemas import JobOutcome, LabelingJobSet, LabelingResult, SelectionResult

__all__ = [
    "JobResult",
    "Labeler",
    "collect_labels",
    "get_labeler",
    "ingest",
    "ingest_path",
    "label_file",
    "label_generation",
    "prepare_label_jobs",
    "run_label_job",
    "run_label_jobs",
]

STANDALONE_NAME = "label.json"  # what `eip-al label` needs to finish an exported batch


def _batch(cfg: ALConfig, run: RunDir, gen: int, screen: bool = False) -> LabelBatch:
    """The generation's batch; with `screen`, its outlier limit from the dataset it joins."""
    limit, rule = outlier_force_limit(cfg.labeler, run, gen) if screen else (None, "")
    return LabelBatch(cfg.labeler, run.step_dir(gen, "label"), run.root, gen,
                      outlier_force_limit=limit, outlier_rule=rule)


_PERCENTILE_CACHE: dict[tuple[str, str, float], float] = {}


def outlier_force_limit(lab: LabelerConfig, run: RunDir, gen: int) -> tuple[float | None, str]:
    """(limit, rule): `outlier_force_factor` × the `outlier_percentile` of per-atom |F| in
    generation `gen`'s dataset (the one new labels would join); (None, "") when switched off."""
    if lab.outlier_force_factor is None:
        return None, ""
    try:
        manifest = run.dataset_for(gen)
    except RunDirError:  # labels outside a loop (no dataset to join): nothing to compare with
        return None, ""
    path = run.abs(manifest.dataset_extxyz)
    key = (str(path), manifest.sha256, lab.outlier_percentile)
    if key not in _PERCENTILE_CACHE:
        frames = read_frames(path)
        norms = np.concatenate([np.linalg.norm(a.get_forces(), axis=1) for a in frames])
        _PERCENTILE_CACHE[key] = float(np.percentile(norms, lab.outlier_percentile))
    p = _PERCENTILE_CACHE[key]
    rule = (f"labeler.outlier_force_factor {lab.outlier_force_factor:g} × {p:.3g} eV/Å, the "
            f"{lab.outlier_percentile:g}th percentile of per-atom |F| in {manifest.dataset_extxyz}")
    return lab.outlier_force_factor * p, rule


def prepare_label_jobs(cfg: ALConfig, run: RunDir, gen: int) -> LabelingJobSet:
    """Write `label/jobs/<id>/` for each selected frame and the manifest `label/jobs.json`.

    Idempotent: job dirs whose input hash is unchanged are kept with their results.
    """
    sel_path = run.artifact_path(gen, "select")
    sel = load_valid(sel_path, SelectionResult)
    if sel is None:
        raise RunDirError(
            f"{sel_path}: no valid selection for generation {gen} (run the select step first)"
        )
    frames = frames_for_labeling(run.abs(sel.selected_extxyz))
    return prepare_jobs(_batch(cfg, run, gen), frames, source=sel.selected_extxyz)


def run_label_job(cfg: ALConfig, run: RunDir, gen: int, job_id: str) -> JobOutcome:
    """Run one prepared job unless it already has a final outcome; never raises for a job failure.

    local: runs it here (and the SCF retry if needed); slurm: submits it as a one-task
    array and waits (use `label_generation` to submit all jobs as one array); export:
    only reads what is there.
    """
    return run_job(_batch(cfg, run, gen), job_id)


def run_label_jobs(cfg: ALConfig, run: RunDir, gen: int) -> None:
    """Run every prepared, unfinished job on the configured backend in one go.

    local: a pool of `labeler.n_parallel` jobs; slurm: ONE job array for the generation;
    export: nothing (the user runs the scripts, then `eip-al ingest`).
    """
    run_all(_batch(cfg, run, gen))


def collect_labels(cfg: ALConfig, run: RunDir, gen: int) -> LabelingResult:
    """Parse all jobs, write `label/labeled.extxyz` and `label/failures.csv`; return the artifact.

    `budget_exceeded` (with `message`) is set when more than
    `labeler.max_failure_fraction` of the jobs failed or have not run; the caller decides
    to stop. The artifact is not written here.
    """
    return collect(_batch(cfg, run, gen, screen=True))


def label_generation(cfg: ALConfig, run: RunDir, gen: int) -> LabelingResult:
    """prepare → run every unfinished job on the configured backend → collect.

    With `export`, nothing runs: every job is `not_run`, `budget_exceeded` is true and the
    message says to run the job scripts and then `eip-al ingest RUN_DIR`.
    """
    prepare_label_jobs(cfg, run, gen)
    run_label_jobs(cfg, run, gen)
    return collect(_batch(cfg, run, gen, screen=True))


def ingest(run: RunDir, gen: int | None = None) -> LabelingResult:
    """Collect whatever finished of exported (or interrupted) jobs; idempotent.

    `gen` defaults to the latest generation with labeling jobs. The label artifact is
    written when the failures are within budget (then the run continues from merge); an
    existing artifact without unfinished jobs is returned unchanged.
    """
    if not run.config_path.exists():
        raise RunDirError(f"{run.root}: not a run directory (no config.yaml)")
    cfg = run.load_config()
    gens = [g for g in run.generations() if (run.step_dir(g, "label") / "jobs.json").exists()]
    if gen is None:
        if not gens:
            raise RunDirError(f"{run.root}: no generation has labeling jobs to ingest")
        gen = max(gens)
    elif gen not in gens:
        raise RunDirError(f"{run.step_dir(gen, 'label')}: no labeling jobs (jobs.json) to ingest")
    path = run.artifact_path(gen, "label")
    found = load_valid(path, LabelingResult)
    if found is not None and not any(o.failure_class == "not_run" for o in found.outcomes):
        return found
    result = collect(_batch(cfg, run, gen, screen=True))
    if not result.budget_exceeded:
        result = integrity.seal(result, run.root)
        result.write(path)
    return result


# ------------------------------------------------------------------------- standalone
def default_work_dir(out_path: Path) -> Path:
    return Path(out_path).with_name(Path(out_path).name + ".jobs")


def label_file(
    in_path: Path, out_path: Path, labeler_cfg: LabelerConfig, work_dir: Path | None = None
) -> LabelingResult:
    """Label every frame of `in_path` into `out_path` (`eip-al label`); failed frames are left out.

    Jobs live in `work_dir` (default `<out>.jobs/`), so running again resumes; the failure
    report is written to `<out stem>.failures.csv` beside `out_path`. With `export`, the
    jobs are written and nothing runs: `eip-al ingest WORK_DIR` finishes later.
    """
    in_path, out_path = Path(in_path).resolve(), Path(out_path).resolve()
    work_dir = Path(work_dir or default_work_dir(out_path)).resolve()
    frames = read_frames(in_path, require_labels=False, require_cell=False)  # empty: FrameError
    batch = LabelBatch(labeler_cfg, work_dir, work_dir, 0)
    work_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        work_dir / STANDALONE_NAME,
        json.dumps(
            {
                "input": str(in_path),
                "output": str(out_path),
                "labeler": labeler_cfg.model_dump(mode="json"),
            },
            indent=1,
        )
        + "\n",
    )
    prepare_jobs(batch, frames, source=str(in_path))
    run_all(batch)
    return _finish_standalone(batch, out_path)


def _finish_standalone(batch: LabelBatch, out_path: Path) -> LabelingResult:
    result = collect(batch, out_path)
    report = out_path.with_name(out_path.stem + ".failures.csv")
    atomic_write_text(report, (batch.label_dir / FAILURES_NAME).read_text())
    result.write(batch.label_dir / "artifact.json")
    return result


def ingest_path(path: Path, gen: int | None = None) -> LabelingResult:
    """`eip-al ingest PATH`: a run directory, or the work directory of `eip-al label`."""
    path = Path(path)
    if (path / STANDALONE_NAME).exists():
        info = json.loads((path / STANDALONE_NAME).read_text())
        batch = LabelBatch(LabelerConfig.model_validate(info["labeler"]), path, path, 0)
        return _finish_standalone(batch, Path(info["output"]))
    if (path / "config.yaml").exists():
        return ingest(RunDir(path), gen)
    raise FileNotFoundError(
        f"{path}: neither a run directory (config.yaml) nor an `eip-al label` work directory ({STANDALONE_NAME})"
    )
