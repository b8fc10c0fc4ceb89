"""Payload integrity: every artifact records its files' size and sha256; steps check them.

* `seal` fills `Artifact.files` (run-relative path → size, sha256) from the files on disk,
  just before the artifact is written (`run_step` does it for every step).
* `verify` compares them with the files now on disk and raises `IntegrityError`: one line
  naming the file, the step that wrote it and the command that redoes that step. A step
  checks its inputs (`verify_inputs`) before it starts and a skipped step checks its own
  files; `eip-al status` and `eip-al run` check the whole run (`run_problems`).
* `redo` invalidates one step and everything after it (`eip-al run --redo STEP --gen N`).

Artifacts written before eip-al recorded `files` are checked only where a digest exists
anyway (the dataset manifest's `sha256`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from eip_al.atomic import sha256_file
from eip_al.rundir import ARTIFACT_NAME, RunDir, RunDirError, load_valid
from eip_al.schemas import (
    STEPS,
    Artifact,
    DatasetManifest,
    ExplorationSummary,
    FileDigest,
    GenerationRecord,
    GenerationReport,
    LabelingResult,
    SelectionAudit,
    SelectionResult,
    StepName,
    TrainingResult,
)

A = TypeVar("A", bound=Artifact)

STEP_ARTIFACTS: dict[StepName, type[Artifact]] = {
    "train": TrainingResult,
    "explore": ExplorationSummary,
    "select": SelectionResult,
    "label": LabelingResult,
    "merge": DatasetManifest,
    "audit": SelectionAudit,
    "report": GenerationReport,
}
REDO_STEPS: tuple[str, ...] = ("seed", *STEPS)
# What each step reads ("dataset": the dataset the generation trains on).
INPUTS: dict[StepName, tuple[str, ...]] = {
    "train": ("dataset",),
    "explore": ("dataset", "train"),
    "select": ("train", "explore"),
    "label": ("select",),
    "merge": ("dataset", "label"),
    "audit": ("train", "label"),
    "report": ("dataset", *STEPS[:-1]),
}
# Resume points a redo moves aside too: a finished `last.pt` would only reload model.pt.
REDO_RESUME_FILES: dict[str, tuple[str, ...]] = {"train": ("last.pt",)}
INVALIDATED = ".invalidated"


class IntegrityError(RunDirError):
    """A payload file differs from what its artifact recorded (changed, truncated, missing)."""


def file_digest(path: Path) -> FileDigest:
    return FileDigest(size=path.stat().st_size, sha256=sha256_file(path))


def seal(artifact: A, root: Path) -> A:
    """A copy of `artifact` whose `files` hold the digests of its payload files under `root`."""
    files = {}
    for rel in artifact.payload_paths():
        path = Path(root) / rel
        if path.is_file():
            files[rel] = file_digest(path)
    return artifact.model_copy(update={"files": files})


def _recorded(artifact: Artifact) -> dict[str, tuple[int | None, str]]:
    """(size, sha256) per payload file; a legacy dataset manifest has its sha256 only."""
    if artifact.files:
        return {rel: (d.size, d.sha256) for rel, d in artifact.files.items()}
    if isinstance(artifact, DatasetManifest):
        return {artifact.dataset_extxyz: (None, artifact.sha256)}
    return {}


def payload_problem(run: RunDir, artifact: Artifact) -> tuple[str, str] | None:
    """(file, what is wrong) for the first payload file that differs from its record."""
    for rel, (size, sha) in _recorded(artifact).items():
        path = run.abs(rel)
        if not path.is_file():
            return rel, "is missing"
        actual = path.stat().st_size
        if size is not None and actual != size:
            return rel, f"has {actual} bytes, {size} when written (truncated or changed)"
        if sha256_file(path) != sha:
            return rel, "changed since it was written (sha256 differs)"
    return None


def owner(run: RunDir, artifact_path: Path) -> tuple[str, int]:
    """(step, generation) whose artifact lives at `artifact_path`; ("seed", 0) for the seed."""
    parts = Path(artifact_path).resolve().relative_to(run.root).parts
    if parts[0] == "seed":
        return "seed", 0
    gen = int(parts[0].split("-")[1])
    return parts[1], gen


def redo_command(step: str, gen: int, run_cmd: str | None = None) -> str:
    """How to redo `step` of `gen`: `run_cmd` is the `eip-al run ...` prefix to use."""
    return f"{run_cmd or 'eip-al run CONFIG'} --redo {step} --gen {gen}"


def problem_message(
    run: RunDir, artifact_path: Path, artifact: Artifact, run_cmd: str | None = None
) -> str | None:
    """One line on the first bad payload file of `artifact`, or None when all match."""
    found = payload_problem(run, artifact)
    if found is None:
        return None
    rel, what = found
    step, gen = owner(run, artifact_path)
    who = "the seed step" if step == "seed" else f"step {step} of generation {gen}"
    return (
        f"{run.abs(rel)}: {what}; {who} wrote it ({run.rel(artifact_path)}). "
        f"Redo from there: {redo_command(step, gen, run_cmd)}"
    )


def verify(run: RunDir, artifact: Artifact, artifact_path: Path) -> None:
    """Raise IntegrityError if a payload file of `artifact` differs from its record."""
    msg = problem_message(run, artifact_path, artifact)
    if msg is not None:
        raise IntegrityError(msg)


def verify_inputs(run: RunDir, gen: int, step: StepName, warm_start: bool = False) -> None:
    """Check the artifacts `step` of `gen` reads (those that exist) before it starts."""
    checks: list[tuple[Path, type[Artifact]]] = [
        (run.dataset_manifest_path(gen), DatasetManifest) if name == "dataset"
        else (run.artifact_path(gen, name), STEP_ARTIFACTS[name])  # type: ignore[index]
        for name in INPUTS[step]
    ]
    if step == "train" and warm_start and gen > 0:
        checks.append((run.artifact_path(gen - 1, "train"), TrainingResult))
    for path, cls in checks:
        found = load_valid(path, cls)
        if found is not None:
            verify(run, found, path)


def finished(run: RunDir | None, path: Path, cls: type[A]) -> A | None:
    """The valid artifact at `path` (a finished step, to skip on resume), its payload files
    verified when `run` is given (`IntegrityError` on a mismatch); None: the step must run."""
    found = load_valid(path, cls)
    if found is not None and run is not None:
        verify(run, found, path)
    return found


def run_step(
    path: Path, cls: type[A], produce: Callable[[], A], run: RunDir | None = None
) -> tuple[A, bool]:
    """Return the valid artifact at `path`, or call `produce()`, write its result, return it.

    The second element is True when the step was skipped (artifact already there). With
    `run`, a found artifact's payload files are verified (`IntegrityError`
    on a mismatch) and a produced one records theirs (unless its producer already did).
    """
    found = finished(run, path, cls)
    if found is not None:
        return found, True
    result = produce()
    if not isinstance(result, cls):
        raise TypeError(f"step producing {path} returned {type(result).__name__}, not {cls.__name__}")
    if run is not None and not result.files:
        result = seal(result, run.root)
    result.write(path)
    return result, False


def run_problems(run: RunDir, run_cmd: str | None = None) -> list[tuple[Path, str]]:
    """(artifact path, one-line message) per valid artifact whose payload files do not match."""
    checks: list[tuple[Path, type[Artifact]]] = [(run.seed_dir / ARTIFACT_NAME, DatasetManifest)]
    for gen in run.generations():
        checks += [(run.artifact_path(gen, s), STEP_ARTIFACTS[s]) for s in STEPS]
    out = []
    for path, cls in checks:
        found = load_valid(path, cls)
        msg = problem_message(run, path, found, run_cmd) if found is not None else None
        if msg is not None:
            out.append((path, msg))
    return out


def redo(run: RunDir, step: str, gen: int) -> tuple[Path, list[Path]]:
    """Invalidate `step` of `gen` and every step after it, in `gen` and later generations.

    The artifacts (and `REDO_RESUME_FILES`) move into `<run>/.invalidated/<time>/` under
    their run-relative paths, so the steps rerun; payload files and other resume points
    stay (a rerun reuses finished labeling jobs whose input did not change). `seed` redoes
    everything. Generation records lose the invalidated steps and any stop decision.
    Returns the folder they moved into and their new paths.
    """
    if step not in REDO_STEPS:
        raise RunDirError(f"--redo {step}: unknown step; one of {', '.join(REDO_STEPS)}")
    if step == "seed":
        gen = 0
    elif gen not in run.generations():
        have = ", ".join(map(str, run.generations())) or "none"
        raise RunDirError(f"--redo {step} --gen {gen}: {run.root} has no generation {gen} (has: {have})")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = run.root / INVALIDATED / stamp
    n = 1
    while dest.exists():  # a second redo within the same second
        n += 1
        dest = run.root / INVALIDATED / f"{stamp}-{n}"
    todo: list[Path] = []
    if step == "seed":
        todo.append(run.seed_dir / ARTIFACT_NAME)
    for g in run.generations():
        if g < gen:
            continue
        first = STEPS.index(step) if g == gen and step != "seed" else 0  # type: ignore[arg-type]
        for s in STEPS[first:]:
            d = run.step_dir(g, s)
            todo.append(d / ARTIFACT_NAME)
            todo += [d / name for name in REDO_RESUME_FILES.get(s, ())]
            if s == "explore" and d.is_dir():
                todo += sorted(d.glob("*.json"))  # each walker's result
            if s == "train" and d.is_dir():
                todo += sorted(d.glob("member-*/last.pt"))  # an ensemble's members (eip_al/train.py)
        _forget_steps(run, g, STEPS[first:])
    moved = []
    for src in dict.fromkeys(todo):
        if src.exists():
            target = dest / run.rel(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, target)
            moved.append(target)
    return dest, moved


def _forget_steps(run: RunDir, gen: int, steps: tuple[StepName, ...]) -> None:
    """Drop `steps` and the stop decision from generation `gen`'s record."""
    path = run.gen_dir(gen) / "generation.json"
    rec = load_valid(path, GenerationRecord)
    if rec is None:
        return
    kept = [s for s in rec.steps if s.step not in steps]
    rec.model_copy(update={"steps": kept, "converged": False, "stop_reason": None}).write(path)
