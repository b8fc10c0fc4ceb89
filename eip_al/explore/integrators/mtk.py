"""NPT Martyna–Tobias–Klein (ASE `IsotropicMTKNPT`): Nosé–Hoover chains on the particles
(`tau_fs`) and on an isotropic barostat (`taup_fs`) at `pressure_bar`; samples NPT exactly."""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics
from ase.md.nose_hoover_chain import IsotropicMTKNPT

from eip_al.config import WalkerConfig
from eip_al.explore.integrators import BAR

STATE: tuple[str, ...] = (
    "_eps", "_p_eps", "_cell0", "_volume0",
    "_thermostat._eta", "_thermostat._p_eta", "_barostat._xi", "_barostat._p_xi",
)


def make(atoms: Atoms, wc: WalkerConfig, rng: np.random.Generator) -> MolecularDynamics:
    return IsotropicMTKNPT(atoms, wc.timestep_fs * units.fs, temperature_K=wc.temperature_K,
                           pressure_au=wc.pressure_bar * BAR, tdamp=wc.tau_fs * units.fs,
                           pdamp=wc.taup_fs * units.fs)
