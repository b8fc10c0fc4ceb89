"""Physical screening of frames: a minimum distance per element pair (the dpgen2 conf-filter idea).

One rule, used by the exploration collapse detector (a walker that crosses it stops) AND by
selection (a frame that breaks it is never labelled), so both judge a frame alike.

The threshold of a pair (a, b) is the largest of

* the absolute floor `collapse.min_distance` (any pair),
* the covalent floor `collapse.covalent_factor` × (r_cov(a) + r_cov(b)) (ASE's covalent radii),
* the learned limit: `collapse.learned_factor` × the smallest a–b distance seen in the
  reference data (by default the run's seed dataset, which never changes during a run, so
  the limit cannot ratchet down as explored frames enter the dataset),
* an explicit `collapse.min_pair_distance["a-b"]` (which replaces the learned limit).

For the demo's water (seed: 300 K classical MD, smallest O–O 2.46 Å) the default factor
0.9 gives O–O ≥ 2.21 Å: intermolecular close contacts such as the 1.4–2.0 Å O–O
that UDD produced before are rejected (docs/exploration.md). Distances are minimum-image
(periodic) and come from one vesin neighbor list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import vesin
from ase import Atoms
from ase.data import chemical_symbols, covalent_radii

from eip_al.config import CollapseConfig, parse_pair
from eip_al.io import read_frames
from eip_al.rundir import RunDir

LEARN_CUTOFF = 4.0  # Å: pairs farther apart than this are never a close contact


def pair_name(za: int, zb: int) -> str:
    """Canonical pair label, heavier element first: 'O-H', 'O-O', 'H-H'."""
    a, b = sorted((int(za), int(zb)), reverse=True)
    return f"{chemical_symbols[a]}-{chemical_symbols[b]}"


def _pairs(numbers: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Integer code of the (unordered) element pair of each neighbor pair."""
    zi, zj = numbers[i].astype(np.int64), numbers[j].astype(np.int64)
    return np.maximum(zi, zj) * 1000 + np.minimum(zi, zj)


def smallest_pair_distances(frames: Iterable[Atoms], cutoff: float = LEARN_CUTOFF) -> dict[str, float]:
    """Smallest distance per element pair over `frames` (pairs never closer than `cutoff`
    are absent). Periodic frames use minimum-image distances."""
    best: dict[int, float] = {}
    nl = vesin.NeighborList(cutoff=cutoff, full_list=False)
    for atoms in frames:
        pbc = [bool(p) for p in atoms.pbc]
        box = np.asarray(atoms.cell.array, dtype=np.float64) if any(pbc) else np.zeros((3, 3))
        i, j, d = nl.compute(np.asarray(atoms.positions, dtype=np.float64), box, pbc, "ijd")
        if not d.size:
            continue
        code = _pairs(np.asarray(atoms.numbers), i, j)
        for c in np.unique(code):
            m = float(d[code == c].min())
            best[int(c)] = min(best.get(int(c), math.inf), m)
    return {pair_name(c // 1000, c % 1000): v for c, v in sorted(best.items())}


@dataclass(frozen=True)
class PairScreen:
    """Minimum distance per element pair; `check` names the first pair that breaks it."""

    thresholds: dict[str, float]  # 'O-O' -> Å
    sources: dict[str, str] = field(default_factory=dict)  # 'O-O' -> 'learned' | 'covalent' | ...

    def check(self, atoms: Atoms) -> str | None:
        """``"O-O 1.513 Å < 2.211 Å (atoms 3 and 17)"`` for the worst pair, None if sane."""
        return PairChecker(self, atoms).check(atoms.positions)


class PairChecker:
    """`PairScreen` bound to one trajectory (fixed species and pbc): a Verlet-skin neighbor
    list reused between steps while the cell stays, so a per-step check is cheap."""

    def __init__(self, screen: PairScreen, atoms: Atoms, skin: float = 0.3):
        self.numbers = np.asarray(atoms.numbers)
        species = sorted(set(self.numbers.tolist()))
        codes = {pair_name(a, b): max(a, b) * 1000 + min(a, b) for a in species for b in species}
        missing = [p for p in codes if p not in screen.thresholds]
        if missing:
            raise ValueError(f"no minimum distance for pair(s) {', '.join(missing)}")
        self.screen = screen
        self._limit = {codes[p]: screen.thresholds[p] for p in codes}
        self.cutoff = max(self._limit.values())
        self.pbc = [bool(p) for p in atoms.pbc]
        self.box = np.asarray(atoms.cell.array, dtype=np.float64) if any(self.pbc) else np.zeros((3, 3))
        self.skin = skin
        self._nl = vesin.NeighborList(cutoff=self.cutoff, full_list=False, skin=skin)

    def check(self, positions: np.ndarray, cell: np.ndarray | None = None) -> str | None:
        """The worst pair as text, or None; `cell` is the current cell of a variable-cell
        (NPT) trajectory (a changed cell rebuilds the neighbor list)."""
        if cell is not None and not np.array_equal(cell, self.box):
            self.box = np.array(cell, dtype=np.float64)
            self._nl = vesin.NeighborList(cutoff=self.cutoff, full_list=False, skin=self.skin)
        i, j, d = self._nl.compute(np.asarray(positions, dtype=np.float64), self.box, self.pbc, "ijd")
        if not d.size:
            return None
        code = _pairs(self.numbers, i, j)
        limit = np.vectorize(self._limit.__getitem__, otypes=[np.float64])(code)
        short = d / limit
        k = int(np.argmin(short))
        if short[k] >= 1.0:
            return None
        name = pair_name(self.numbers[i[k]], self.numbers[j[k]])
        digits = 3  # enough decimals that the two numbers differ (2.2106 < 2.2108, not 2.211 < 2.211)
        while digits < 6 and f"{d[k]:.{digits}f}" == f"{limit[k]:.{digits}f}":
            digits += 1
        return (f"{name} {d[k]:.{digits}f} Å < {limit[k]:.{digits}f} Å "
                f"(atoms {int(i[k])} and {int(j[k])})")


def build_screen(
    cfg: CollapseConfig, numbers: Iterable[int], reference: Mapping[str, float] | None = None
) -> PairScreen:
    """The screen for the elements in `numbers`, from `cfg` and the reference data's
    smallest pair distances (`smallest_pair_distances`; None or {}: not learned)."""
    species = sorted({int(z) for z in numbers})
    explicit = {pair_name(*parse_pair(k)): float(v) for k, v in cfg.min_pair_distance.items()}
    thresholds: dict[str, float] = {}
    sources: dict[str, str] = {}
    for ia, za in enumerate(species):
        for zb in species[ia:]:
            name = pair_name(za, zb)
            options = {
                "min_distance": cfg.min_distance,
                "covalent": cfg.covalent_factor * float(covalent_radii[za] + covalent_radii[zb]),
            }
            if name in explicit:
                options["explicit"] = explicit[name]
            elif reference and name in reference and cfg.learned_factor is not None:
                options["learned"] = cfg.learned_factor * float(reference[name])
            source = max(options, key=options.__getitem__)
            thresholds[name], sources[name] = options[source], source
    return PairScreen(thresholds=thresholds, sources=sources)


_REFERENCE_CACHE: dict[tuple[str, str], dict[str, float]] = {}


def reference_distances(run: RunDir, gen: int, learn_from: str) -> dict[str, float]:
    """Smallest pair distances of the reference dataset (seed or generation `gen`'s),
    cached per (file, sha256) within the process (walkers and selection share it)."""
    manifest = run.dataset_for(0 if learn_from == "seed" else gen)
    path = run.abs(manifest.dataset_extxyz)
    key = (str(path), manifest.sha256)
    if key not in _REFERENCE_CACHE:
        empty = not path.is_file() or path.stat().st_size == 0  # nothing to learn from: floors only
        frames = [] if empty else read_frames(path, require_labels=False, require_cell=False)
        _REFERENCE_CACHE[key] = smallest_pair_distances(frames)
    return _REFERENCE_CACHE[key]


def screen_for_run(cfg: CollapseConfig, run: RunDir, gen: int, numbers: Iterable[int]) -> PairScreen:
    """The screen of generation `gen` of a run for the elements in `numbers`."""
    reference = reference_distances(run, gen, cfg.learn_from) if cfg.learned_factor is not None else None
    return build_screen(cfg, numbers, reference)
