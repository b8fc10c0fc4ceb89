"""Stress from the eIP model's strain derivative: against ASE's numerical stress (model and
UDD bias), symmetric, only computed when asked for, refused for a non-periodic frame."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError
from ase.stress import voigt_6_to_full_3x3_stress

from eip_al.calculator import EIPCalculator
from eip_al.config import UDDConfig
from eip_al.explore.udd import UDDCalculator
from tests.model_fixtures import tiny_model, torch_threads, water_box

pytestmark = pytest.mark.filterwarnings("ignore:Please use `ase.calculators.fd:FutureWarning")


def strained_box():
    """A small periodic water box in a triclinic cell (so off-diagonal stress is not zero)."""
    atoms = water_box(n_molecules=8, box=6.2, seed=3)
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.2, -0.1], [0.15, 0.0, 0.05], [-0.1, 0.1, 0.0]]),
                   scale_atoms=True)
    return atoms


def test_model_stress_equals_numerical_stress_and_is_symmetric() -> None:
    with torch_threads(1):
        atoms = strained_box()
        atoms.calc = EIPCalculator.from_model(tiny_model(seed=1))
        stress = atoms.get_stress()
        numerical = atoms.calc.calculate_numerical_stress(atoms, d=1e-5)
    assert np.abs(stress).max() > 1e-4  # a random model has a real stress here
    assert np.abs(stress - numerical).max() < 1e-8 * max(1.0, np.abs(stress).max())
    full = voigt_6_to_full_3x3_stress(stress)
    assert np.allclose(full, full.T)


def test_udd_bias_stress_is_the_strain_derivative_of_the_bias_energy() -> None:
    """Without the limiter the barostat's stress is that of E + E_bias."""
    with torch_threads(1):
        atoms = strained_box()
        udd = UDDConfig(A=50.0, B=0.5, limiter=False)
        calc = UDDCalculator(EIPCalculator.from_model(tiny_model(seed=2)), udd)
        atoms.calc = calc
        stress = atoms.get_stress()
        bias = calc.results["stress_bias"]

        class Total(UDDCalculator):  # E + E_bias as the energy, for ASE's finite differences
            def calculate(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                super().calculate(*args, **kwargs)
                total = self.results["energy"] + self.results["energy_bias"]
                self.results["energy"] = self.results["free_energy"] = total

        probe = atoms.copy()
        probe.calc = Total(EIPCalculator.from_model(tiny_model(seed=2)), udd)
        numerical = probe.calc.calculate_numerical_stress(probe, d=1e-5)
    assert np.abs(bias).max() > 1e-3 * np.abs(stress).max()  # the bias matters
    assert np.abs(stress - numerical).max() < 1e-8 * max(1.0, np.abs(stress).max())


def test_stress_only_when_asked_and_refused_without_a_periodic_cell() -> None:
    with torch_threads(1):
        atoms = water_box(n_molecules=8, box=6.2)
        atoms.calc = EIPCalculator.from_model(tiny_model())
        atoms.get_forces()
        assert "stress" not in atoms.calc.results  # NVT MD never pays for it
        atoms.calc.stress = True
        atoms.rattle(1e-3)
        atoms.get_forces()
        assert "stress" in atoms.calc.results
        atoms.pbc = False
        with pytest.raises(PropertyNotImplementedError, match="periodic in all three"):
            atoms.get_stress()


def test_limited_bias_stress_follows_the_limiter_gain() -> None:
    """In the limiter's linear regime (|F_b| ≪ C) F̃_b = k·F_b with k = D/(2πC²): the bias
    stress is k times the exact one, and the total is model + bias."""
    with torch_threads(1):
        atoms = strained_box()
        udd = UDDConfig(A=0.05, B=0.5, C=0.2, D=1.5, limiter=True)
        calc = UDDCalculator(EIPCalculator.from_model(tiny_model(seed=2)), udd)
        atoms.calc = calc
        stress = atoms.get_stress()
        res = calc.results
    assert np.abs(res["forces_bias_raw"]).max() < 0.01 * udd.C  # linear regime
    k = udd.D / (2 * np.pi * udd.C**2)
    np.testing.assert_allclose(res["stress_bias"], k * res["stress_bias_raw"], rtol=1e-3)
    np.testing.assert_allclose(stress, res["stress_model"] + res["stress_bias"], rtol=0, atol=1e-15)
