"""NVT Langevin (ASE `Langevin`, friction `friction_per_fs`); its noise comes from the walker's RNG."""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.md import MolecularDynamics

from eip_al.config import WalkerConfig

STATE: tuple[str, ...] = ()  # the RNG state is saved by the walker


def make(atoms: Atoms, wc: WalkerConfig, rng: np.random.Generator) -> MolecularDynamics:
    return Langevin(atoms, wc.timestep_fs * units.fs, temperature_K=wc.temperature_K,
                    friction=wc.friction_per_fs / units.fs, fixcm=False, rng=rng)
