"""Pool building: every walker's candidate frames with provenance, σ and physical filters.

`pool_candidates` reads the explore step's frames into a `CandidatePool` (the arrays the
core needs); each frame runs through a chain of physical filters (`physical_filters`:
flagged by its walker → finite σ → geometry, the same pair-distance screen and O-H rule
the walkers' collapse detector uses), and the first that fails names why it is unphysical.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io.extxyz import key_val_str_to_dict

from eip_al.config import ALConfig, CollapseConfig
from eip_al.io import FrameError, frame_id, read_frames
from eip_al.rundir import RunDir, RunDirError
from eip_al.schemas import ExplorationSummary
from eip_al.screening import PairScreen, screen_for_run
from eip_al.uq import frame_aleatoric

log = logging.getLogger(__name__)


@dataclass
class CandidatePool:
    """All candidate frames of one generation, with the arrays `select_pool` needs."""

    frames: list[Atoms]
    walker_names: list[str]  # index → walker name
    walker: np.ndarray  # walker index per frame
    kind: list[str]
    step: np.ndarray
    time_fs: np.ndarray
    sigma: np.ndarray
    key: np.ndarray  # frame ids (str)
    unphysical: np.ndarray
    detail: list[str]  # why a frame is unphysical ("" otherwise)
    aleatoric: np.ndarray | None = None  # mean per-atom aleatoric σ per frame (NaN: no array)


def _as_bool(value: object, where: str) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "t", "false", "f"):
        return value.strip().lower() in ("true", "t")
    raise FrameError(f"{where}: info 'unphysical' must be a boolean, got {value!r}")


def unphysical_reason(atoms: Atoms, collapse: CollapseConfig, screen: PairScreen | None = None) -> str | None:
    """Why a frame is physically implausible (``"unphysical: O-O 1.513 Å < 2.211 Å (atoms 3
    and 17)"``), None if it passes: non-finite positions, then the exploration collapse
    detector's geometry rules (per-pair minimum distances of `screen`; in pure water an H
    farther than `max_oh_bond` from every O), so selection and exploration judge alike.
    """
    from eip_al.explore.collapse import CollapseDetector  # lazy: eip_al.explore imports the model

    pos = atoms.positions
    if not np.all(np.isfinite(pos)):
        return "unphysical: positions not finite"
    why = CollapseDetector(collapse, atoms, target_temperature_K=1.0, screen=screen).geometry(pos)
    if why is None:
        return None
    kind, _, detail = why.partition(": ")
    return f"unphysical: {detail}" if kind == "min_distance" else f"unphysical: {why}"


def unphysical_counts(details: Sequence[str]) -> dict[str, int]:
    """Unphysical frames per cause: the element pair ('O-O') of a close contact, else the
    rule ('molecule_broken', 'positions not finite', ...)."""
    counts: dict[str, int] = {}
    for d in details:
        if not d:
            continue
        body = d.removeprefix("unphysical: ")
        first = body.split(" ")[0]
        head = first if "-" in first else body.split(":")[0].split(" (")[0]
        counts[head] = counts.get(head, 0) + 1
    return dict(sorted(counts.items()))


def _frame_sigma(atoms: Atoms, where: str) -> float:
    if "config_uncertainty" in atoms.info:
        value = atoms.info["config_uncertainty"]
    elif "uncertainty" in atoms.arrays:
        value = float(np.mean(atoms.arrays["uncertainty"]))  # same definition: mean_i σ_i
    else:
        raise FrameError(f"{where}: missing info 'config_uncertainty' (and no 'uncertainty' array)")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise FrameError(f"{where}: info 'config_uncertainty' is not a number: {value!r}") from None


def _canonical_id(atoms: Atoms) -> str:
    """The frame's id; recomputed when missing or mangled (ASE parses all-digit ids as numbers)."""
    fid = atoms.info.get("frame_id")
    return fid if isinstance(fid, str) and fid else frame_id(atoms)


# ============================================================================ physical filters
FrameFilter = Callable[[Atoms, float, str], str | None]
"""(frame, its configuration σ, where it came from) → why it is unphysical; None: it passes."""


def flagged_by_exploration(atoms: Atoms, sigma: float, where: str) -> str | None:
    """The walker already marked the frame (info 'unphysical')."""
    return "flagged unphysical by exploration" if _as_bool(atoms.info.get("unphysical", False), where) else None


def finite_sigma(atoms: Atoms, sigma: float, where: str) -> str | None:
    return None if math.isfinite(sigma) else f"config_uncertainty not finite ({sigma})"


class GeometryFilter:
    """`unphysical_reason` with the run's pair-distance screen, learned once per species set."""

    def __init__(self, collapse: CollapseConfig, run: RunDir, gen: int):
        self.collapse, self.run, self.gen = collapse, run, gen
        self._screens: dict[tuple[int, ...], PairScreen | None] = {}

    def __call__(self, atoms: Atoms, sigma: float, where: str) -> str | None:
        species = tuple(sorted(set(atoms.numbers.tolist())))
        if species not in self._screens:
            self._screens[species] = screen_for_run(self.collapse, self.run, self.gen, species)
        return unphysical_reason(atoms, self.collapse, self._screens[species])


def physical_filters(cfg: ALConfig, run: RunDir, gen: int) -> tuple[FrameFilter, ...]:
    """The chain every pooled frame runs through, in order; the first failure is its detail."""
    return (flagged_by_exploration, finite_sigma, GeometryFilter(cfg.explore.collapse, run, gen))


def first_failure(filters: Sequence[FrameFilter], atoms: Atoms, sigma: float, where: str) -> str | None:
    """Why the first filter that rejects the frame does so (None: all pass; later ones not run)."""
    for check in filters:
        why = check(atoms, sigma, where)
        if why is not None:
            return why
    return None


def pool_candidates(
    cfg: ALConfig, run: RunDir, summary: ExplorationSummary, filters: Sequence[FrameFilter] | None = None
) -> CandidatePool:
    """Read every walker's candidate frames, with provenance, σ and the first physical filter
    each fails (`physical_filters` unless given)."""
    frames: list[Atoms] = []
    walker_idx, kinds, steps, times, sigmas, keys, unphys, detail = [], [], [], [], [], [], [], []
    names = [w.walker for w in summary.walkers]
    filters = physical_filters(cfg, run, summary.generation) if filters is None else filters
    if len(set(names)) != len(names):
        raise RunDirError(
            f"exploration summary of generation {summary.generation} repeats a walker name"
        )
    for w_i, res in enumerate(summary.walkers):
        path = run.abs(res.frames_extxyz)
        if not res.frames_extxyz or not path.is_file() or path.stat().st_size == 0:
            if res.n_candidates > 0:
                raise FrameError(
                    f"{path}: walker {res.walker} reports {res.n_candidates} candidates "
                    "but the file is missing or empty"
                )
            continue
        got = read_frames(path, require_labels=False, require_cell=False)
        if len(got) != res.n_candidates:
            log.warning(
                "%s: %d frames, walker artifact says n_candidates=%d",
                path,
                len(got),
                res.n_candidates,
            )
        for f_i, atoms in enumerate(got):
            where = f"{path}: frame {f_i}"
            if "step" not in atoms.info:
                raise FrameError(f"{where}: missing info 'step'")
            try:
                step = int(atoms.info["step"])
            except (TypeError, ValueError):
                raise FrameError(
                    f"{where}: info 'step' is not an integer: {atoms.info['step']!r}"
                ) from None
            sigma = _frame_sigma(atoms, where)
            why = first_failure(filters, atoms, sigma, where)
            fid = _canonical_id(atoms)
            atoms.info["frame_id"] = fid
            atoms.info["walker"], atoms.info["kind"] = res.walker, res.kind  # the file's owner
            atoms.info.setdefault("source", res.kind)
            frames.append(atoms)
            walker_idx.append(w_i)
            kinds.append(res.kind)
            steps.append(step)
            times.append(float(atoms.info.get("time_fs", math.nan)))
            sigmas.append(sigma)
            keys.append(fid)
            unphys.append(why is not None)
            detail.append(why or "")
    return CandidatePool(
        frames=frames,
        walker_names=names,
        walker=np.asarray(walker_idx, dtype=np.int64),
        kind=kinds,
        step=np.asarray(steps, dtype=np.int64),
        time_fs=np.asarray(times, dtype=np.float64),
        sigma=np.asarray(sigmas, dtype=np.float64),
        key=np.asarray(keys, dtype=object),
        unphysical=np.asarray(unphys, dtype=bool),
        detail=detail,
        aleatoric=np.asarray([frame_aleatoric(a) for a in frames], dtype=np.float64),
    )


def dataset_frame_ids(path: Path) -> set[str]:
    """Frame ids of a dataset extxyz, read from the comment lines only (fast).

    Falls back to reading the whole file (and hashing structures) when a frame has no
    usable `frame_id`.
    """
    ids: set[str] = set()
    with open(path) as fh:
        index = 0
        while line := fh.readline():
            if not line.strip():
                continue
            try:
                n_atoms = int(line)
            except ValueError:
                raise FrameError(
                    f"{path}: frame {index}: expected an atom count, got {line.strip()[:40]!r}"
                ) from None
            fid = key_val_str_to_dict(fh.readline()).get("frame_id")
            if not isinstance(fid, str) or not fid:
                return {
                    _canonical_id(a)
                    for a in read_frames(path, require_labels=False, require_cell=False)
                }
            ids.add(fid)
            for _ in range(n_atoms):
                fh.readline()
            index += 1
    return ids
