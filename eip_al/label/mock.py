"""A flexible water force field that stands in for DFT (labeler kind `mock`).

The model is q-SPC/Fw (Paesani, Zhang, Case, Cheatham & Voth, J. Chem. Phys. 125,
184507 (2006), Table I): harmonic O–H bonds and H–O–H angle inside each molecule,
O–O Lennard-Jones and point charges between molecules. For a smooth, cheap periodic
energy the Coulomb term is the damped shifted force (DSF) form of Fennell & Gezelter,
J. Chem. Phys. 124, 234104 (2006), and Lennard-Jones is shifted-force; both go to
zero with their first derivative at the cutoff, so NVE conserves energy. Parameters,
units and options: docs/mock.md.

`MockWaterCalculator` is an ASE calculator (used for the seed MD); `MockLabeler` wraps it
in the `Labeler` interface with optional seeded Gaussian label noise (to exercise the
aleatoric channel) and injected failures (to exercise failure handling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.geometry import find_mic
from ase.units import Bohr, Hartree, kcal, mol
from scipy.special import erfc
from vesin import NeighborList

from eip_al.config import MockLabelerConfig
from eip_al.io import FrameError
from eip_al.label.jobfile import JobFileLabeler
from eip_al.schemas import TheoryFingerprint
from eip_al.systems import water_topology

KCAL_MOL = kcal / mol  # eV
COULOMB = Hartree * Bohr  # e²/(4πε0) in eV·Å


@dataclass(frozen=True)
class WaterFF:
    """q-SPC/Fw parameters (Paesani et al. 2006, Table I) in eV, Å, rad and e."""

    k_bond: float = 1059.162 * KCAL_MOL  # eV/Å², E = k/2 (r - r0)²
    r0: float = 1.000  # Å
    k_angle: float = 75.90 * KCAL_MOL  # eV/rad², E = k/2 (θ - θ0)²
    theta0: float = float(np.radians(112.0))  # rad
    sigma: float = 3.165492  # Å, O–O Lennard-Jones
    epsilon: float = 0.1554252 * KCAL_MOL  # eV
    q_o: float = -0.84  # e; q_H = -q_O / 2
    cutoff: float = 7.0  # Å, Coulomb and Lennard-Jones (≤ L/2 of a 96-water box: fast lists)
    alpha: float = 0.25  # 1/Å, DSF damping; erfc(alpha·rc) = 0.013, like their 0.2 at 9 Å (0.011)

    def describe(self) -> dict[str, str]:
        """The parameters as strings (what the theory fingerprint records)."""
        return {
            "coulomb": f"DSF alpha={self.alpha:g}/A rc={self.cutoff:g}A",
            "lennard_jones": f"shifted-force rc={self.cutoff:g}A",
        }


def water_energy_forces(
    atoms: Atoms, ff: WaterFF = WaterFF(), nl: NeighborList | None = None
) -> tuple[float, np.ndarray]:
    """Total energy (eV) and forces (eV/Å) of a pure-water frame under `ff`.

    The frame must be fully periodic or fully non-periodic. Molecules are found with
    `water_topology` and may be split across the periodic boundary. Atoms of one molecule
    interact only through the bond and angle terms; every other pair within the cutoff,
    including periodic images of the same molecule, interacts through Coulomb (+ LJ for
    O–O). Raises ValueError for a non-water frame or mixed periodicity.
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and not pbc.all():
        raise ValueError(
            f"mock water force field needs pbc all True or all False (got {pbc.tolist()})"
        )
    periodic = bool(pbc.all())
    pos = np.asarray(atoms.positions, dtype=float)
    cell = np.asarray(atoms.cell, dtype=float)
    n = len(atoms)
    o, h1, h2 = water_topology(atoms)
    forces = np.zeros((n, 3))

    # -- intramolecular: harmonic bonds and angle on minimum-image vectors
    vec = np.concatenate([pos[h1] - pos[o], pos[h2] - pos[o]])  # (2M, 3)
    if periodic:
        vec, _ = find_mic(vec, cell, True)
    d1, d2 = np.split(vec, 2)
    r1 = np.linalg.norm(d1, axis=1)
    r2 = np.linalg.norm(d2, axis=1)
    energy = 0.5 * ff.k_bond * float(np.sum((r1 - ff.r0) ** 2) + np.sum((r2 - ff.r0) ** 2))
    g1 = (ff.k_bond * (r1 - ff.r0) / r1)[:, None] * d1  # dE/dd1
    g2 = (ff.k_bond * (r2 - ff.r0) / r2)[:, None] * d2
    cos = np.clip(np.einsum("ij,ij->i", d1, d2) / (r1 * r2), -1.0, 1.0)
    theta = np.arccos(cos)
    energy += 0.5 * ff.k_angle * float(np.sum((theta - ff.theta0) ** 2))
    # dθ/dd1 = -(d2/(r1 r2) - cos d1/r1²) / sin θ, and symmetrically for d2
    pref = (ff.k_angle * (theta - ff.theta0) / -np.maximum(np.sin(theta), 1e-12))[:, None]
    g1 += pref * (d2 / (r1 * r2)[:, None] - cos[:, None] * d1 / (r1**2)[:, None])
    g2 += pref * (d1 / (r1 * r2)[:, None] - cos[:, None] * d2 / (r2**2)[:, None])
    forces[h1] -= g1
    forces[h2] -= g2
    forces[o] += g1 + g2

    # -- intermolecular: DSF Coulomb on all pairs, shifted-force LJ on O–O
    molecule = np.empty(n, dtype=int)
    slot = np.empty(n, dtype=int)
    for k, idx in enumerate((o, h1, h2)):
        molecule[idx] = np.arange(len(o))
        slot[idx] = k
    intra = np.zeros((len(o), 3, 3))  # minimum-image distances inside each molecule
    intra[:, 0, 1] = intra[:, 1, 0] = r1
    intra[:, 0, 2] = intra[:, 2, 0] = r2
    intra[:, 1, 2] = intra[:, 2, 1] = np.linalg.norm(d2 - d1, axis=1)

    if nl is None:
        nl = NeighborList(cutoff=ff.cutoff, full_list=False)
    box = cell if periodic else np.zeros((3, 3))
    i, j, dvec, dist = nl.compute(pos, box, periodic, "ijDd")
    same = molecule[i] == molecule[j]
    excluded = same & (i != j)
    excluded[excluded] = (
        np.abs(dist[excluded] - intra[molecule[i[excluded]], slot[i[excluded]], slot[j[excluded]]])
        < 1e-8
    )
    keep = ~excluded
    i, j, dvec, dist = i[keep], j[keep], dvec[keep], dist[keep]

    charge = np.where(atoms.numbers == 8, ff.q_o, -ff.q_o / 2)
    qq = COULOMB * charge[i] * charge[j]
    a, rc = ff.alpha, ff.cutoff
    erfc_rc = erfc(a * rc)
    f_shift = erfc_rc / rc**2 + 2 * a / np.sqrt(np.pi) * np.exp(-((a * rc) ** 2)) / rc
    energy += float(np.sum(qq * (erfc(a * dist) / dist - erfc_rc / rc + f_shift * (dist - rc))))
    # -dV/dr for the DSF pair potential
    f_mag = qq * (
        erfc(a * dist) / dist**2
        + 2 * a / np.sqrt(np.pi) * np.exp(-((a * dist) ** 2)) / dist
        - f_shift
    )

    oo = (atoms.numbers[i] == 8) & (atoms.numbers[j] == 8)
    r_oo = dist[oo]
    s6 = (ff.sigma / r_oo) ** 6
    s6c = (ff.sigma / rc) ** 6
    v_c = 4 * ff.epsilon * (s6c**2 - s6c)
    f_c = 24 * ff.epsilon * (2 * s6c**2 - s6c) / rc  # -dV/dr at the cutoff
    energy += float(np.sum(4 * ff.epsilon * (s6**2 - s6) - v_c + f_c * (r_oo - rc)))
    f_mag[oo] += 24 * ff.epsilon * (2 * s6**2 - s6) / r_oo - f_c

    # vesin's D is r_j - r_i (+ shift): a repulsive pair pushes j along +D and i along -D
    fvec = (f_mag / dist)[:, None] * dvec
    for k in range(3):
        forces[:, k] += np.bincount(j, fvec[:, k], minlength=n) - np.bincount(
            i, fvec[:, k], minlength=n
        )
    return energy, forces


class MockWaterCalculator(Calculator):
    """ASE calculator for the q-SPC/Fw + DSF water force field (energy and forces)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, cutoff: float = 7.0, alpha: float = 0.25, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if cutoff <= 0 or alpha < 0:
            raise ValueError(f"cutoff must be > 0 and alpha >= 0 (got {cutoff}, {alpha})")
        self.ff = WaterFF(cutoff=cutoff, alpha=alpha)
        self._nl = NeighborList(cutoff=cutoff, full_list=False)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        energy, forces = water_energy_forces(self.atoms, self.ff, self._nl)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


# ------------------------------------------------------------------------- labeler
def _rng(seed: int, fid: str, stream: int) -> np.random.Generator:
    """A generator fixed by (config seed, frame id, stream): reruns give identical labels."""
    return np.random.default_rng(np.random.SeedSequence([seed % 2**64, int(fid, 16), stream]))


class MockLabeler(JobFileLabeler):
    """Labels water frames with the q-SPC/Fw force field, plus optional noise and failures.

    Job files and backends: `eip_al.label.jobfile` (run.sh runs `eip_al.label.mock_job`).
    Noise and failures are drawn from generators seeded by (config seed, frame id), so they
    depend neither on job order nor on where the job ran.
    """

    kind = "mock"
    job_module = "eip_al.label.mock_job"

    def __init__(self, config: MockLabelerConfig | None = None, ff: WaterFF = WaterFF()) -> None:
        self.config = config if config is not None else MockLabelerConfig()
        self.ff = ff

    def theory(self) -> TheoryFingerprint:
        """q-SPC/Fw with its cutoff scheme; noise levels change labels, so they are part of it."""
        extra = self.ff.describe()
        extra["energy_noise_eV"] = f"{self.config.energy_noise_eV:g}"
        extra["force_noise_eV_A"] = f"{self.config.force_noise_eV_A:g}"
        return TheoryFingerprint(code="mock", method="q-SPC/Fw", extra=extra)

    def check_frame(self, atoms: Atoms, where: str) -> None:
        """Refuse frames the water force field cannot label (anything but (H2O)n)."""
        try:
            water_topology(atoms)
        except ValueError as exc:
            raise FrameError(f"{where}: the mock labeler models water only: {exc}") from None

    def job_record(self, fid: str) -> dict[str, Any]:
        """job.json without `kind` (`eip_al.label.mock_job` knows it): existing mock jobs keep their hash."""
        return {"frame_id": fid, "mock": self.config.model_dump(mode="json")}

    def script_title(self) -> str:
        return "eip-al mock label (q-SPC/Fw)"

    def compute(self, atoms: Atoms, fid: str) -> dict[str, Any]:
        """Force-field labels plus seeded noise, or an injected / force-field failure."""
        cfg = self.config
        u = float(_rng(cfg.seed, fid, 0).random())
        if u < cfg.failure_rate:
            return {
                "failure_class": "injected",
                "message": f"injected failure (labeler.mock.failure_rate={cfg.failure_rate:g}, draw {u:.4f})",
            }
        try:
            energy, forces = water_energy_forces(atoms, self.ff)
        except ValueError as exc:
            return {"failure_class": "crashed", "message": f"mock force field: {exc}"}
        noise = _rng(cfg.seed, fid, 1)
        energy += cfg.energy_noise_eV * float(noise.standard_normal())
        forces = forces + cfg.force_noise_eV_A * noise.standard_normal(forces.shape)
        return {"ok": True, "energy": energy, "forces": forces.tolist()}
