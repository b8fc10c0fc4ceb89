"""Reading, validating and writing frames (extxyz), and stable frame ids.

Conventions for every extxyz this project writes or reads:
* labels: total energy in eV (``atoms.get_potential_energy()``), forces in eV/Å
  (``atoms.get_forces()``), carried by ASE's SinglePointCalculator;
* provenance in ``atoms.info``: ``frame_id`` (content hash), ``generation``, ``source``
  (seed | md | udd | user), ``walker``, ``step``, ``time_fs``, ``labeler``, ``theory``
  (TheoryFingerprint.key()), ``job_id``, ``split`` (train | valid | test);
* model outputs: per-atom arrays ``uncertainty`` (N,), ``uncertainty_components`` (N, 3),
  ``aleatoric_components`` (N, 3) and info ``config_uncertainty`` (eV/Å).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers
from ase.io import read, write

from eip_al.atomic import atomic_path

KNOWN_ELEMENTS = frozenset(atomic_numbers) - {"X"}


class FrameError(ValueError):
    """A frame (or a file of frames) is unusable; the message names file, frame and problem."""


def frame_id(atoms: Atoms, decimals: int = 5) -> str:
    """Stable content hash of species, positions and cell (rounded to 1e-5 Å).

    Positions are wrapped into the cell first for periodic frames, so the same structure
    written wrapped or unwrapped has the same id.
    """
    pos = atoms.get_positions(wrap=bool(atoms.pbc.any()))
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(pos, decimals).astype(np.float64).tobytes() + b"|")
    h.update(np.round(np.asarray(atoms.cell), decimals).astype(np.float64).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    return h.hexdigest()[:20]


def validate_frame(
    atoms: Atoms,
    *,
    where: str = "frame",
    require_labels: bool = True,
    elements: Iterable[str] | None = None,
    require_cell: bool = True,
) -> None:
    """Raise FrameError if the frame is unusable: names `where` and the problem."""
    if len(atoms) == 0:
        raise FrameError(f"{where}: has no atoms")
    symbols = set(atoms.get_chemical_symbols())
    unknown = symbols - KNOWN_ELEMENTS
    if unknown:
        raise FrameError(f"{where}: unknown element(s) {sorted(unknown)}")
    if elements is not None:
        extra = symbols - set(elements)
        if extra:
            raise FrameError(
                f"{where}: element(s) {sorted(extra)} not in the allowed set {sorted(elements)}"
            )
    if not np.all(np.isfinite(atoms.positions)):
        raise FrameError(f"{where}: positions contain NaN or inf")
    if require_cell:
        if not atoms.pbc.all():
            raise FrameError(f"{where}: pbc must be True in all directions (got {atoms.pbc.tolist()})")
        if abs(atoms.cell.volume) < 1e-6:
            raise FrameError(f"{where}: periodic frame has no cell (volume 0)")
    if require_labels:
        calc = atoms.calc
        results = getattr(calc, "results", {}) if calc is not None else {}
        if "energy" not in results:
            raise FrameError(f"{where}: missing energy")
        if "forces" not in results:
            raise FrameError(f"{where}: missing forces")
        energy = results["energy"]
        forces = np.asarray(results["forces"])
        if not np.isfinite(energy):
            raise FrameError(f"{where}: energy is not finite ({energy})")
        if forces.shape != (len(atoms), 3):
            raise FrameError(f"{where}: forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
        if not np.all(np.isfinite(forces)):
            raise FrameError(f"{where}: forces contain NaN or inf")


def read_frames(
    path: Path | str,
    *,
    require_labels: bool = True,
    elements: Iterable[str] | None = None,
    require_cell: bool = True,
    index: str | int = ":",
) -> list[Atoms]:
    """Read frames with ASE and validate each; errors name the file and frame index."""
    path = Path(path)
    if not path.exists():
        raise FrameError(f"{path}: file not found")
    try:
        frames = read(path, index=index)
    except Exception as exc:  # ASE raises many types for malformed files
        raise FrameError(f"{path}: cannot read frames: {type(exc).__name__}: {exc}") from exc
    if isinstance(frames, Atoms):
        frames = [frames]
    if not frames:
        raise FrameError(f"{path}: contains no frames")
    elements = list(elements) if elements is not None else None
    for i, atoms in enumerate(frames):
        validate_frame(
            atoms,
            where=f"{path}: frame {i}",
            require_labels=require_labels,
            elements=elements,
            require_cell=require_cell,
        )
    return frames


def attach_labels(atoms: Atoms, energy: float, forces: np.ndarray) -> Atoms:
    """Attach energy (eV) and forces (eV/Å) to a copy-free frame as a SinglePointCalculator."""
    atoms.calc = SinglePointCalculator(
        atoms, energy=float(energy), free_energy=float(energy), forces=np.asarray(forces, dtype=float)
    )
    return atoms


def write_frames(path: Path | str, frames: Sequence[Atoms]) -> Path:
    """Write frames to extxyz atomically (a crash leaves the old file or the new one)."""
    path = Path(path)
    with atomic_path(path, suffix=".extxyz") as tmp:
        write(tmp, list(frames), format="extxyz")
    return path
