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
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import vesin
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers
from ase.io import iread, write
from ase.io.extxyz import key_val_str_to_dict

from eip_al.atomic import atomic_path

KNOWN_ELEMENTS = frozenset(atomic_numbers) - {"X"}
# Two atoms closer than this are one atom written twice (or a broken file), not a strained
# geometry: no structure has nuclei 0.1 Å apart, and the model's σ is NaN at distance 0.
OVERLAP_DISTANCE_A = 0.1


class FrameError(ValueError):
    """A frame (or a file of frames) is unusable; the message names file, frame and problem."""


def frame_id(atoms: Atoms) -> str:
    """Stable content hash of species, positions, cell and pbc.

    Positions enter as the 8-decimal text that extxyz stores ('%.8f'), so the id of a frame
    is the same before and after any number of extxyz write/read round trips (rounding the
    floats instead would flip ids whose coordinates sit on a rounding boundary). Positions
    are not wrapped: the same structure written wrapped and unwrapped has two ids.
    """
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(" ".join(f"{x:.8f}" for x in np.ravel(atoms.positions)).encode())
    h.update(b"|" + " ".join(f"{x:.6f}" for x in np.ravel(atoms.cell.array)).encode())
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
    _check_overlap(atoms, where)
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


def _check_overlap(atoms: Atoms, where: str) -> None:
    """FrameError naming the closest pair if two atoms (or periodic images) overlap."""
    if len(atoms) < 2 and not atoms.pbc.any():
        return
    box = np.asarray(atoms.cell.array, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and abs(atoms.cell.volume) < 1e-6:  # no usable cell: plain distances
        pbc = np.zeros(3, dtype=bool)
    nl = vesin.NeighborList(cutoff=OVERLAP_DISTANCE_A, full_list=False)
    i, j, d = nl.compute(np.asarray(atoms.positions, dtype=np.float64), box, pbc, "ijd")
    if len(d):
        k = int(np.argmin(d))
        raise FrameError(
            f"{where}: atoms {int(i[k])} and {int(j[k])} overlap ({float(d[k]):.3f} Å apart, "
            f"closer than {OVERLAP_DISTANCE_A} Å)"
        )


def read_frames(
    path: Path | str,
    *,
    require_labels: bool = True,
    elements: Iterable[str] | None = None,
    require_cell: bool = True,
    index: str | int = ":",
) -> list[Atoms]:
    """Read frames with ASE and validate each; errors name the file and frame index.

    An empty file, an unreadable frame (e.g. an unknown element symbol) or an unusable one
    (`validate_frame`) raises FrameError.
    """
    path = Path(path)
    if not path.exists():
        raise FrameError(f"{path}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise FrameError(f"{path}: empty file (no frames)")
    frames: list[Atoms] = []
    try:
        for atoms in iread(path, index=index):
            frames.append(atoms)
    except KeyError as exc:  # ASE's symbol → atomic number lookup
        symbol = exc.args[0] if exc.args else None
        if isinstance(symbol, str) and symbol not in KNOWN_ELEMENTS:
            raise FrameError(f"{path}: frame {len(frames)}: unknown element symbol {symbol!r}") from None
        raise FrameError(f"{path}: frame {len(frames)}: cannot read: KeyError: {exc}") from exc
    except Exception as exc:  # ASE raises many types for malformed files
        raise FrameError(f"{path}: frame {len(frames)}: cannot read: {type(exc).__name__}: {exc}") from exc
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


_PLAIN = re.compile(r"^[A-Za-z0-9_.:+/-]+$")


def extxyz_safe_string(value: str, key: str, where: str) -> str:
    """`value` in the form ASE's extxyz reads back as the same str.

    ASE parses info values: "000123" would come back as the int 123, "T" as True and some
    hex ids as floats. Such strings are stored as `_JSON "<value>"`, which ASE decodes.
    """
    if _PLAIN.match(value):
        parsed = key_val_str_to_dict(f"k={value}").get("k")
        if isinstance(parsed, str) and parsed == value:
            return value
    encoded = json.dumps(value, ensure_ascii=False)
    if "\\" in encoded or '"' in encoded[1:-1]:
        raise FrameError(
            f"{where}: info '{key}' = {value!r} cannot be stored in extxyz "
            "(quotes, backslashes or control characters)"
        )
    return "_JSON " + encoded


def write_frames(path: Path | str, frames: Sequence[Atoms]) -> Path:
    """Write frames to extxyz atomically (a crash leaves the old file or the new one).

    String info values are protected so they read back unchanged (`extxyz_safe_string`);
    the caller's frames are not modified.
    """
    path = Path(path)
    out = []
    for i, atoms in enumerate(frames):
        strings = {k: v for k, v in atoms.info.items() if isinstance(v, str)}
        if strings:
            calc = atoms.calc
            atoms = atoms.copy()
            atoms.calc = calc
            for k, v in strings.items():
                atoms.info[k] = extxyz_safe_string(v, k, f"{path}: frame {i}")
        out.append(atoms)
    with atomic_path(path, suffix=".extxyz") as tmp:
        write(tmp, out, format="extxyz")
    return path
