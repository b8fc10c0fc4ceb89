"""Restart points of MD runs (the seed MD and the walkers): positions, momenta, cell, the
integrator's own state (thermostat/barostat variables, named arrays) and a JSON `meta` dict
in one .npz, written atomically. Points written before the cell was saved load with
``cell=None`` (their MD never changed the cell).

A point made with other settings (its ``meta["key"]`` differs) or that cannot be read is
ignored with one progress line: the run starts that MD over, it never fails on its own
restart file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from eip_al.atomic import atomic_path
from eip_al.progress import say

_STATE = "state:"  # npz name prefix of the integrator's state arrays


@dataclass(frozen=True)
class MDState:
    positions: np.ndarray  # Å
    momenta: np.ndarray  # ASE units
    meta: dict[str, Any]  # JSON: "key" (the settings it belongs to) and the caller's counters
    cell: np.ndarray | None = None  # Å, (3, 3)
    state: dict[str, np.ndarray] = field(default_factory=dict)  # integrator variables by name


def save_md_state(path: Path, atoms: Atoms, meta: dict[str, Any], state: dict[str, np.ndarray] | None = None) -> None:
    """Write the restart point of `atoms` with `meta` (which must hold a "key") and the
    integrator's `state` atomically."""
    arrays = {_STATE + k: np.asarray(v) for k, v in (state or {}).items()}
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, positions=atoms.get_positions(), momenta=atoms.get_momenta(), cell=atoms.cell.array,
                 meta=json.dumps(meta), **arrays)


def load_md_state(path: Path | None, key: str) -> MDState | None:
    """The restart point at `path` if it exists, is readable and was made with settings `key`."""
    if path is None or not path.is_file():
        return None
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            positions, momenta, meta = z["positions"], z["momenta"], json.loads(str(z["meta"]))
            cell = z["cell"] if "cell" in z.files else None
            state = {k[len(_STATE):]: z[k] for k in z.files if k.startswith(_STATE)}
    except Exception as exc:  # damaged, truncated or of an older format: start over
        say("restart", f"{path}: ignoring unreadable restart point ({type(exc).__name__}: {exc})")
        return None
    if meta.get("key") != key:
        say("restart", f"{path}: made with other settings; starting this MD over")
        return None
    return MDState(positions, momenta, meta, cell, state)
