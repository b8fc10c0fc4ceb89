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

from eip_al.atomic import sha256_file
from eip_al.config import ALConfig, ConfigError
from eip_al.data import coerce_str_info, write_dataset
from eip_al.integrity import seal
from eip_al.io import frame_id, read_frames, write_frames
from eip_al.label import get_labeler
from eip_al.label.jobs import LabelBatch, collect, prepare_jobs, run_all
from eip_al.label.mock import MockWaterCalculator
from eip_al.mdstate import load_md_state, save_md_state
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
        return write_dataset(frames, run.seed_dir, -1, theory, cfg.merge, run, source=str(cfg.seed_data.file))
    theory = get_labeler(cfg.labeler).theory()
    sampled = sample_seed_md(cfg, run.seed_dir / "md")
    frames = label_seed_frames(cfg, run, sampled, source=run.rel(run.seed_dir / "md" / "frames.extxyz"))
    return write_dataset(frames, run.seed_dir, -1, theory, cfg.merge, run)


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
    state = load_md_state(state_path, key)
    if state is not None:
        step = int(state.meta["step"])
        n_done = int(state.meta["n_frames"])
        atoms.positions = state.positions
        atoms.set_momenta(state.momenta)
        rng.bit_generator.state = state.meta["rng"]
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
    save_md_state(state_path, atoms, {"key": key, "step": step, "n_frames": len(frames),
                                      "rng": rng.bit_generator.state})


# ------------------------------------------------------------------------------ labels
def label_seed_frames(cfg: ALConfig, run: RunDir, frames: list[Atoms], source: str) -> list[Atoms]:
    """Label `frames` with the configured labeler and backend in `seed/label/`.

    Uses the labeling machinery of generations (`eip_al.label.jobs`: per-job outcome
    records, so a rerun redoes no finished job; retries; failures.csv) and writes its
    `LabelingResult` to `seed/label/artifact.json`. Failed frames are dropped; more than
    `labeler.max_failure_fraction` failed (or not run, with `export`) raises SeedError.
    """
    batch = LabelBatch(cfg.labeler, run.seed_dir / "label", run.root, -1)
    prepare_jobs(batch, frames, source=source)
    run_all(batch)
    result = collect(batch)
    if result.budget_exceeded or result.n_ok == 0:
        raise SeedError(
            f"{batch.label_dir}: seed labels failed: {result.message or 'no frame was labelled'}; "
            "rerun to retry (finished jobs are kept)"
        )
    seal(result, run.root).write(batch.label_dir / ARTIFACT_NAME)
    if result.n_failed:
        console.print(
            f"seed labels: {result.n_ok}/{len(frames)} ok, failed by class {result.failures_by_class}"
        )
    return read_frames(run.abs(result.labeled_extxyz), require_labels=True, require_cell=False)


# ------------------------------------------------------------------------------ user file
def user_seed_frames(cfg: ALConfig) -> tuple[list[Atoms], TheoryFingerprint]:
    """The user's labelled extxyz as seed frames, and the theory their labels carry.

    Every frame needs energy, forces, a periodic cell and only the system's elements.
    Provenance ids read back as numbers (a file rewritten by plain ASE) become strings again.
    The theory is the configured labeler's if every frame says so (info `theory` equal to
    its key, e.g. frames exported from an eip-al run); otherwise an `external` fingerprint
    of this file, which later merges refuse to mix unless `merge.allow_theory_mismatch`.
    """
    path = cfg.seed_data.file
    assert path is not None  # guaranteed by SeedDataConfig's validator
    elements = sorted(set(initial_structure(cfg.system).get_chemical_symbols()))
    frames = read_frames(path, require_labels=True, require_cell=True, elements=elements)
    for atoms in frames:
        coerce_str_info(atoms)
    labeler_theory = (
        get_labeler(cfg.labeler).theory() if all("theory" in a.info for a in frames) else None
    )
    if labeler_theory is not None and all(a.info["theory"] == labeler_theory.key() for a in frames):
        theory = labeler_theory
    else:
        sha = sha256_file(Path(path))
        theory = TheoryFingerprint(
            code="external", method="user-supplied", extra={"file": Path(path).name, "sha256": sha}
        )
    for atoms in frames:
        atoms.info.update(source="user", frame_id=frame_id(atoms), theory=theory.key())
    return frames, theory
