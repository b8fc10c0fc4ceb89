"""Collapse detection for exploration trajectories: cheap per-step sanity checks.

A trajectory has collapsed when a frame is no longer physical or numerically sane:
non-finite energy, forces, positions or σ; any force above `max_force`; any pair of atoms
closer than its element pair's minimum distance (`eip_al.screening`, the same rule
selection applies); in pure-water systems an H farther than `max_oh_bond` from
every O (a molecule fell apart); for NPT walkers a density outside
[`density_min_g_cm3`, `density_max_g_cm3`]; the kinetic temperature above
`max_temperature_factor` × target. A collapse is a result (the walker stops cleanly
and records why), never an exception.

Geometry uses vesin neighbor lists with small cutoffs and a Verlet skin reused between
steps, so a check costs far less than a model evaluation.
"""

from __future__ import annotations

import numpy as np
import vesin
from ase import Atoms

from eip_al.config import CollapseConfig
from eip_al.screening import PairChecker, PairScreen, build_screen
from eip_al.systems import density_g_cm3, is_water

REASONS = ("non_finite", "max_force", "min_distance", "molecule_broken", "density", "temperature")
"""Prefixes of collapse reasons (`<prefix>: <detail>`), for grouping in reports."""


class CollapseDetector:
    """Per-step sanity checks of one trajectory (fixed species and pbc; the cell too unless
    `variable_cell`, NPT, where each check gets the current cell and the density is checked)."""

    def __init__(
        self,
        cfg: CollapseConfig,
        atoms: Atoms,
        target_temperature_K: float,
        screen: PairScreen | None = None,
        skin: float = 0.3,
        variable_cell: bool = False,
    ):
        """`screen`: the per-pair distance rule (default: `build_screen` without learned
        limits, i.e. the absolute and covalent floors only)."""
        self.cfg = cfg
        self.pairs = PairChecker(screen or build_screen(cfg, atoms.numbers), atoms, skin=skin)
        self.max_temperature_K = cfg.max_temperature_factor * float(target_temperature_K)
        numbers = np.asarray(atoms.numbers)
        self.water = cfg.max_oh_bond is not None and is_water(numbers)
        self.is_h = numbers == 1
        self.is_o = numbers == 8
        self.pbc = [bool(p) for p in atoms.pbc]
        self.box = np.asarray(atoms.cell.array, dtype=np.float64) if any(self.pbc) else np.zeros((3, 3))
        self.skin = skin
        self._oh = self._oh_list()
        self.variable_cell = variable_cell
        self.mass = float(atoms.get_masses().sum())

    def _oh_list(self) -> vesin.NeighborList | None:
        return vesin.NeighborList(cutoff=self.cfg.max_oh_bond, full_list=False, skin=self.skin) if self.water else None

    def check(
        self,
        positions: np.ndarray,
        energy: float,
        forces: np.ndarray,
        sigma_atom: np.ndarray | None,
        temperature_K: float,
        cell: np.ndarray | None = None,
    ) -> str | None:
        """The reason this frame is insane (``"<kind>: <detail>"``), or None if it is sane;
        `cell`: the current cell of a variable-cell trajectory."""
        bad = _non_finite(positions=positions, energy=energy, forces=forces, sigma=sigma_atom,
                          temperature=temperature_K)
        if bad is not None:
            return f"non_finite: {bad}"
        fnorm = np.sqrt(np.einsum("ij,ij->i", forces, forces))
        k = int(np.argmax(fnorm))
        if fnorm[k] > self.cfg.max_force:
            return f"max_force: |F| on atom {k} is {fnorm[k]:.3g} eV/Å > max_force {self.cfg.max_force} eV/Å"
        if cell is not None and not np.array_equal(cell, self.box):
            self.box = np.array(cell, dtype=np.float64)
            self._oh = self._oh_list()
        geom = self.geometry(positions)
        if geom is not None:
            return geom
        if self.variable_cell:
            rho = self.density()
            lo, hi = self.cfg.density_min_g_cm3, self.cfg.density_max_g_cm3
            if not np.isfinite(rho) or (lo is not None and rho < lo) or (hi is not None and rho > hi):
                return f"density: {rho:.3f} g/cm³ outside [{lo}, {hi}] g/cm³"
        if temperature_K > self.max_temperature_K:
            return (f"temperature: {temperature_K:.1f} K > {self.cfg.max_temperature_factor} × target "
                    f"({self.max_temperature_K:.1f} K)")
        return None

    def density(self) -> float:
        """g/cm³ in the current cell."""
        return density_g_cm3(self.mass, abs(float(np.linalg.det(self.box))))

    def geometry(self, positions: np.ndarray) -> str | None:
        """Close contacts (per element pair) and (water) broken molecules."""
        close = self.pairs.check(positions, self.box if self.variable_cell else None)
        if close is not None:
            return f"min_distance: {close}"
        if self._oh is not None:
            i, j, d = self._oh.compute(np.asarray(positions, dtype=np.float64), self.box, self.pbc, "ijd")
            oh = (d <= self.cfg.max_oh_bond) & (
                (self.is_h[i] & self.is_o[j]) | (self.is_o[i] & self.is_h[j])
            )
            bonded = np.zeros(len(self.is_h), dtype=bool)
            bonded[i[oh]] = True
            bonded[j[oh]] = True
            lost = np.flatnonzero(self.is_h & ~bonded)
            if lost.size:
                return (f"molecule_broken: H atom {int(lost[0])} farther than max_oh_bond "
                        f"{self.cfg.max_oh_bond} Å from every O ({lost.size} such H)")
        return None


def _non_finite(**values: float | np.ndarray | None) -> str | None:
    """Name of the first value containing NaN or inf, with a short description."""
    for name, value in values.items():
        if value is None:
            continue
        arr = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            if arr.ndim == 0:
                return f"{name} is {float(arr)}"
            n_bad = int(np.count_nonzero(~np.isfinite(arr)))
            return f"{name} has {n_bad} non-finite value(s)"
    return None
