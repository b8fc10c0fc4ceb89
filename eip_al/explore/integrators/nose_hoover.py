"""NVT Nosé–Hoover chain (ASE `NoseHooverChainNVT`, 3 links, damping `tau_fs`): deterministic,
samples the canonical ensemble (Berendsen does not)."""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics
from ase.md.nose_hoover_chain import NoseHooverChainNVT

from eip_al.config import WalkerConfig

STATE: tuple[str, ...] = ("_thermostat._eta", "_thermostat._p_eta")


def make(atoms: Atoms, wc: WalkerConfig, rng: np.random.Generator) -> MolecularDynamics:
    return NoseHooverChainNVT(atoms, wc.timestep_fs * units.fs, temperature_K=wc.temperature_K,
                              tdamp=wc.tau_fs * units.fs)
