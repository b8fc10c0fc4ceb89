"""Generation-0 data (`<run>/seed/`): classical water MD + labels, or the user's extxyz.

`seed_data.source: md` follows the paper (configurations sampled from classical MD with
an empirical water model, then labelled): Langevin NVT with the mock q-SPC/Fw force field
from the configured system, `equilibration_steps` discarded, then one frame every
`stride` steps, labelled by the configured labeler. `seed_data.source: file` takes the
user's labelled extxyz, validated frame by frame.

Resume: the MD checkpoints its exact state (positions, momenta, random generator) and the
frames sampled so far, so an interrupted run continues the same trajectory; labeling is
per job and idempotent; a valid `seed/artifact.json` is returned without any work.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import read
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from eip_al.atomic import atomic_write_text, atomic_write_with
from eip_al.config import ALConfig, ConfigError, LabelerConfig
from eip_al.data import write_dataset
from eip_al.io import attach_labels, frame_id, read_frames, write_frames
from eip_al.label.base import Labeler
from eip_al.label.mock import MockLabeler, MockWaterCalculator
from eip_al.rundir import ARTIFACT_NAME, RunDir, load_valid
from eip_al.schemas import DatasetManifest, TheoryFingerprint
from eip_al.systems import initial_structure, water_topology

FRICTION_PER_FS = 0.01  # Langevin friction (1/fs): a 100 fs thermostat time scale
CHECKPOINT_FRAMES = 50  # checkpoint the MD at least every this many sampled frames ...
CHECKPOINT_S = 60.0  # ... and at least this often (seconds)
MD_CHUNK = 100  # MD steps between progress updates and checkpoint checks
WALKER = "seed-md"

console = Console(stderr=True)


class SeedError(RuntimeError):
    """The seed dataset cannot be produced (e.g. too many labels failed)."""


def make_seed(cfg: ALConfig, run: RunDir) -> DatasetManifest:
    """The seed dataset of `run` (generation -1 in its manifest), produced if not there yet."""
    done = load_valid(run.seed_dir / ARTIFACT_NAME, DatasetManifest)
    if done is not None:
        return done
    if cfg.seed_data.source == "file":
        frames, theory = user_seed_frames(cfg)
    else:
        labeler = seed_labeler(cfg.labeler)
        sampled = sample_seed_md(cfg, run.seed_dir / "md")
        frames = label_frames(
            labeler, sampled, run.seed_dir / "label", cfg.labeler.max_failure_fraction
        )
        theory = labeler.theory()
    return write_dataset(frames, run.seed_dir, -1, theory, cfg.merge, run)


def seed_labeler(labeler_cfg: LabelerConfig) -> Labeler:
    """The configured labeler (only `mock` until the labeler registry lands)."""
    if labeler_cfg.kind == "mock":
        return MockLabeler(labeler_cfg.mock)
    raise ConfigError(f"labeler.kind: {labeler_cfg.kind!r} is not available for seed labeling yet")


# ------------------------------------------------------------------------------ MD
def _settings_key(cfg: ALConfig) -> str:
    """Hash of everything that determines the seed trajectory (a changed one restarts it)."""
    blob = json.dumps(
        [
            cfg.system.model_dump(mode="json"),
            cfg.seed_data.model_dump(mode="json"),
            FRICTION_PER_FS,
        ],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _water_start(cfg: ALConfig) -> Atoms:
    """The configured system, checked to be pure water (what the mock force field models)."""
    atoms = initial_structure(cfg.system)
    try:
        water_topology(atoms)
    except ValueError as exc:
        raise ConfigError(
            f"seed_data.source: 'md' runs the mock water force field, but the system is "
            f"not pure water ({exc}); give labelled frames with seed_data.source: file"
        ) from None
    return atoms


def sample_seed_md(cfg: ALConfig, md_dir: Path) -> list[Atoms]:
    """Frames of a Langevin NVT trajectory with the mock force field (unlabelled).

    Writes `md_dir/frames.extxyz` (frames so far) then `md_dir/state.npz` (exact state) at
    each checkpoint; a rerun with the same settings continues from the last checkpoint
    and yields the same frames as an uninterrupted run.
    """
    sd = cfg.seed_data
    frames_path, state_path = md_dir / "frames.extxyz", md_dir / "state.npz"
    total = sd.equilibration_steps + sd.n_frames * sd.stride
    key = _settings_key(cfg)
    atoms = _water_start(cfg)
    rng = np.random.default_rng(sd.seed)
    frames: list[Atoms] = []
    step = 0
    state = _load_state(state_path, key)
    if state is not None:
        step = int(state["step"])
        n_done = int(state["n_frames"])
        atoms.positions = state["positions"]
        atoms.set_momenta(state["momenta"])
        rng.bit_generator.state = json.loads(str(state["rng"]))
        frames = list(read(frames_path, index=f":{n_done}")) if n_done else []  # type: ignore[arg-type]
        if len(frames) != n_done:
            raise SeedError(f"{frames_path}: has {len(frames)} frames, checkpoint says {n_done}")
    else:
        thermalize_momenta(atoms, temperature_K=sd.temperature_K, rng=rng)
        Stationary(atoms)
    atoms.calc = MockWaterCalculator()
    dyn = Langevin(
        atoms,
        sd.timestep_fs * units.fs,
        temperature_K=sd.temperature_K,
        friction=FRICTION_PER_FS / units.fs,
        fixcm=False,
        rng=rng,
    )
    last_save, since_save = time.monotonic(), 0
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("seed MD", total=total, completed=step)
        while step < total:
            next_sample = sd.equilibration_steps + (len(frames) + 1) * sd.stride
            chunk = min(next_sample - step, MD_CHUNK)
            dyn.run(chunk)
            step += chunk
            progress.update(task, completed=step)
            if step == next_sample:
                frame = Atoms(
                    atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc
                )
                frame.info.update(
                    source="seed", walker=WALKER, step=step, time_fs=step * sd.timestep_fs
                )
                frames.append(frame)
                since_save += 1
            if (
                step == total
                or since_save >= CHECKPOINT_FRAMES
                or time.monotonic() - last_save >= CHECKPOINT_S
            ):
                _save_state(frames_path, state_path, frames, atoms, rng, step, key)
                last_save, since_save = time.monotonic(), 0
    # what was written, so a resumed run returns exactly what an uninterrupted one does
    return list(read(frames_path, index=":"))


def _load_state(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The checkpoint at `path` if it exists and was made with the same settings."""
    if not path.exists():
        return None
    with np.load(path) as data:
        state = {k: data[k] for k in data.files}
    if str(state.get("settings")) != key:
        console.print(f"{path}: seed settings changed since this checkpoint; restarting the MD")
        return None
    return state


def _save_state(
    frames_path: Path,
    state_path: Path,
    frames: list[Atoms],
    atoms: Atoms,
    rng: np.random.Generator,
    step: int,
    key: str,
) -> None:
    """Frames first, then the state that counts them: a crash in between loses nothing."""
    write_frames(frames_path, frames)
    state = {
        "step": np.array(step),
        "n_frames": np.array(len(frames)),
        "positions": atoms.get_positions(),
        "momenta": atoms.get_momenta(),
        "rng": np.array(json.dumps(rng.bit_generator.state)),
        "settings": np.array(key),
    }
    atomic_write_with(state_path, lambda p: np.savez(p, **state))


# ------------------------------------------------------------------------------ labels
def label_frames(
    labeler: Labeler, frames: list[Atoms], label_dir: Path, max_failure_fraction: float
) -> list[Atoms]:
    """Label `frames` through `labeler` in `label_dir/jobs/<index>`; failed frames are dropped.

    Preparation is recorded in `label_dir/prepared.json` (skipped on rerun); execution is
    the labeler's own idempotent `execute`. Raises SeedError if more than
    `max_failure_fraction` of the jobs fail.
    """
    jobs_dir = label_dir / "jobs"
    job_dirs = [jobs_dir / f"{k:06d}" for k in range(len(frames))]
    ids = [frame_id(a) for a in frames]
    marker = label_dir / "prepared.json"
    prepared = json.loads(marker.read_text()) if marker.exists() else None
    if prepared != {"theory": labeler.theory().key(), "frame_ids": ids}:
        for atoms, job_dir in zip(frames, job_dirs, strict=True):
            labeler.prepare(atoms, job_dir)
        atomic_write_text(
            marker, json.dumps({"theory": labeler.theory().key(), "frame_ids": ids}) + "\n"
        )
    labeler.execute(job_dirs)
    theory_key = labeler.theory().key()
    out: list[Atoms] = []
    failures: dict[str, int] = {}
    for atoms, job_dir in zip(frames, job_dirs, strict=True):
        result = labeler.parse(job_dir, atoms)
        if not result.ok:
            cls = result.failure_class or "crashed"
            failures[cls] = failures.get(cls, 0) + 1
            continue
        labelled = atoms.copy()
        attach_labels(labelled, result.energy, result.forces)
        labelled.info.update(labeler=labeler.kind, theory=theory_key, job_id=job_dir.name)
        out.append(labelled)
    n_failed = len(frames) - len(out)
    if n_failed:
        console.print(f"seed labels: {len(out)}/{len(frames)} ok, failed by class {failures}")
    if not out or n_failed > max_failure_fraction * len(frames):
        raise SeedError(
            f"{label_dir}: {n_failed} of {len(frames)} seed labels failed ({failures}), more than "
            f"labeler.max_failure_fraction={max_failure_fraction}; see the job directories"
        )
    return out


# ------------------------------------------------------------------------------ user file
def user_seed_frames(cfg: ALConfig) -> tuple[list[Atoms], TheoryFingerprint]:
    """The user's labelled extxyz as seed frames, and the theory their labels carry.

    Every frame needs energy, forces, a periodic cell and only the system's elements.
    The theory is the configured labeler's if every frame says so (info `theory` equal to
    its key, e.g. frames exported from an eip-al run); otherwise an `external` fingerprint
    of this file, which later merges refuse to mix unless `merge.allow_theory_mismatch`.
    """
    path = cfg.seed_data.file
    assert path is not None  # guaranteed by SeedDataConfig's validator
    elements = sorted(set(initial_structure(cfg.system).get_chemical_symbols()))
    frames = read_frames(path, require_labels=True, require_cell=True, elements=elements)
    labeler_theory = (
        seed_labeler(cfg.labeler).theory() if all("theory" in a.info for a in frames) else None
    )
    if labeler_theory is not None and all(a.info["theory"] == labeler_theory.key() for a in frames):
        theory = labeler_theory
    else:
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        theory = TheoryFingerprint(
            code="external", method="user-supplied", extra={"file": Path(path).name, "sha256": sha}
        )
    for atoms in frames:
        atoms.info.update(source="user", frame_id=frame_id(atoms), theory=theory.key())
    return frames, theory
