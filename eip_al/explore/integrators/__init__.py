"""Walker integrators by registry (`registries.WALKERS`): one module per ASE integrator.

A module has ``make(atoms, wc, rng) -> MolecularDynamics`` (the integrator of walker config
`wc`; `rng` is the walker's thermostat RNG) and ``STATE``: the integrator attributes
(dotted, e.g. ``"_thermostat._eta"``) that a restart point must carry besides positions,
momenta, cell and the RNG, so a resumed walker continues the same trajectory.
"""

from __future__ import annotations

import inspect
from functools import cache
from importlib import import_module
from types import ModuleType
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics

from eip_al.config import WalkerConfig
from eip_al.registries import WALKERS

BAR = 1e5 * units.Pascal  # 1 bar in eV/Å³


def integrator_module(name: str) -> ModuleType:
    """The module of integrator `name` (a key of `registries.WALKERS`)."""
    if name not in WALKERS:
        raise ValueError(f"unknown integrator {name!r} (expected one of {', '.join(WALKERS)})")
    return import_module(WALKERS[name].target)


def make_dynamics(atoms: Atoms, wc: WalkerConfig, rng: np.random.Generator) -> MolecularDynamics:
    """The ASE integrator of walker config `wc` on `atoms`."""
    return integrator_module(wc.thermostat).make(atoms, wc, rng)


def advance(dyn: MolecularDynamics, forces: np.ndarray) -> np.ndarray:
    """One step; returns the forces at the new positions. Velocity-Verlet integrators take
    and return the forces; the Nosé–Hoover/MTK ones evaluate their own, and the calculator
    hands back its cached results (no second evaluation)."""
    if _steps_with_forces(type(dyn)):
        return dyn.step(forces)
    dyn.step()
    return dyn.atoms.get_forces(md=True)


@cache
def _steps_with_forces(cls: type) -> bool:
    """Whether the integrator class's `step` takes the current forces (asked once per class,
    not every step)."""
    return "forces" in inspect.signature(cls.step).parameters


def _resolve(obj: Any, dotted: str) -> tuple[Any, str]:
    *path, last = dotted.split(".")
    for part in path:
        obj = getattr(obj, part)
    return obj, last


def integrator_state(dyn: MolecularDynamics, wc: WalkerConfig) -> dict[str, np.ndarray]:
    """The integrator's own state (its module's STATE) as arrays, for a restart point."""
    out = {}
    for name in integrator_module(wc.thermostat).STATE:
        obj, attr = _resolve(dyn, name)
        out[name] = np.array(getattr(obj, attr), dtype=np.float64)
    return out


def restore_integrator_state(dyn: MolecularDynamics, wc: WalkerConfig, state: dict[str, np.ndarray]) -> None:
    """Put a saved `integrator_state` back (scalars stay Python floats, arrays arrays)."""
    for name in integrator_module(wc.thermostat).STATE:
        obj, attr = _resolve(dyn, name)
        value = np.array(state[name], dtype=np.float64)
        setattr(obj, attr, float(value) if value.ndim == 0 else value)
