"""NPT Berendsen (ASE `NPTBerendsen`): Berendsen velocity rescaling (`tau_fs`) and isotropic
cell rescaling towards `pressure_bar` (time constant `taup_fs`, `compressibility_per_bar`).
Robust for equilibrating a density, but it does not sample the NPT ensemble exactly."""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics
from ase.md.nptberendsen import NPTBerendsen

from eip_al.config import WalkerConfig
from eip_al.explore.integrators import BAR

STATE: tuple[str, ...] = ()  # positions, momenta and cell are all it has


def make(atoms: Atoms, wc: WalkerConfig, rng: np.random.Generator) -> MolecularDynamics:
    return NPTBerendsen(atoms, wc.timestep_fs * units.fs, temperature_K=wc.temperature_K,
                        pressure_au=wc.pressure_bar * BAR, taut=wc.tau_fs * units.fs,
                        taup=wc.taup_fs * units.fs, compressibility_au=wc.compressibility_per_bar / BAR)
