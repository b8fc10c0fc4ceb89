"""Exploration diversity as the paper measures it: normalized configurational entropy.

For each walker, two order parameters are histogrammed on a fixed Ne x Ne grid and the
Shannon entropy of the cell frequencies is divided by its maximum, 2 log Ne, so 1 means
every cell equally visited and 0 means a single cell. For water the order parameters are
the H–O–H angle of a molecule and the O–H bond length: every O–H bond contributes one
sample (angle of its molecule, its length), i.e. two samples per molecule and frame.
Fixed grid ranges make generations and MD vs UDD comparable (samples outside are counted
and left out, not stretched onto the grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.geometry import find_mic

from eip_al.systems import is_water


def config_entropy(
    x: np.ndarray,
    y: np.ndarray,
    bins: int,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
) -> float | None:
    """Shannon entropy of the 2-D histogram of (x, y) on a bins x bins grid / (2 log bins).

    Only samples inside the ranges count; None when no sample falls inside. A sample on
    the upper edge belongs to the last cell (numpy's histogram2d convention).
    """
    x, y = np.ravel(x).astype(float), np.ravel(y).astype(float)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length (got {x.size} and {y.size})")
    if bins < 2:
        raise ValueError(f"bins must be >= 2 (got {bins})")
    for name, (lo, hi) in (("x_range", x_range), ("y_range", y_range)):
        if not lo < hi:
            raise ValueError(f"{name}: lower bound {lo} must be below upper bound {hi}")
    inside = in_ranges(x, y, x_range, y_range)
    if not inside.any():
        return None
    counts, _, _ = np.histogram2d(x[inside], y[inside], bins=bins, range=[x_range, y_range])
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / (2.0 * np.log(bins)))


def in_ranges(
    x: np.ndarray, y: np.ndarray, x_range: tuple[float, float], y_range: tuple[float, float]
) -> np.ndarray:
    """Mask of samples inside both closed ranges."""
    return (x >= x_range[0]) & (x <= x_range[1]) & (y >= y_range[0]) & (y <= y_range[1])


@dataclass
class WaterOrderParameters:
    """Per O–H bond samples of one or more frames (angle in degrees, bond in Å)."""

    angle_deg: np.ndarray
    bond_A: np.ndarray
    n_molecules_skipped: int  # O atoms without exactly two nearest H (e.g. after dissociation)


def water_order_parameters(frames: Sequence[Atoms]) -> WaterOrderParameters:
    """H–O–H angle and O–H bond length per O–H bond, with minimum-image vectors.

    Each H belongs to its nearest O (minimum image), so the assignment follows the frame
    and not the atom order; an O that ends up with other than two H is skipped and counted.
    """
    angles: list[np.ndarray] = []
    bonds: list[np.ndarray] = []
    skipped = 0
    for i, atoms in enumerate(frames):
        if not is_water(atoms.numbers):
            raise ValueError(f"frame {i}: not a water frame (needs only H and O, two H per O)")
        symbols = np.array(atoms.get_chemical_symbols())
        o_idx, h_idx = np.flatnonzero(symbols == "O"), np.flatnonzero(symbols == "H")
        pos = atoms.get_positions()
        diff = (pos[None, h_idx, :] - pos[o_idx, None, :]).reshape(-1, 3)
        vec, dist = find_mic(diff, atoms.cell, atoms.pbc)
        vec = vec.reshape(len(o_idx), len(h_idx), 3)
        dist = dist.reshape(len(o_idx), len(h_idx))
        owner = np.argmin(dist, axis=0)  # nearest O of each H
        n_h = np.bincount(owner, minlength=len(o_idx))
        good = np.flatnonzero(n_h == 2)
        skipped += len(o_idx) - good.size
        order = np.argsort(owner, kind="stable")  # H grouped by owner
        first = np.searchsorted(owner[order], good)
        h1, h2 = order[first], order[first + 1]
        v1, v2 = vec[good, h1], vec[good, h2]
        r1, r2 = dist[good, h1], dist[good, h2]
        cos = np.clip(np.einsum("ij,ij->i", v1, v2) / (r1 * r2), -1.0, 1.0)
        theta = np.degrees(np.arccos(cos))
        angles += [theta, theta]
        bonds += [r1, r2]
    return WaterOrderParameters(
        angle_deg=np.concatenate(angles) if angles else np.empty(0),
        bond_A=np.concatenate(bonds) if bonds else np.empty(0),
        n_molecules_skipped=skipped,
    )
