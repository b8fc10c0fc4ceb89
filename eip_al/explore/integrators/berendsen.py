"""NVT Berendsen (ASE `NVTBerendsen`): velocity rescaling with time constant `tau_fs`."""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics
from ase.md.nvtberendsen import NVTBerendsen

from eip_al.config import WalkerConfig

STATE: tuple[str, ...] = ()


def make(atoms: Atoms, wc: WalkerConfig, rng: np.random.Generator) -> MolecularDynamics:
    return NVTBerendsen(atoms, wc.timestep_fs * units.fs, temperature_K=wc.temperature_K, taut=wc.tau_fs * units.fs)
