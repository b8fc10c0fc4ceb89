"""NPT walkers: a barostat with a physical water potential keeps (and finds) a sane density;
eIP-driven NPT + UDD walkers record volume and density, resume after a crash to the same
trajectory, run batched as alone; the density collapse rule. The mixed run end to end (xTB
labels, NPT + UDD walker): tests/test_xtb.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.calculators.calculator import all_changes

from eip_al.config import ALConfig, CollapseConfig, WalkerConfig
from eip_al.explore import CollapseDetector, run_trajectory, run_walker, run_walkers
from eip_al.explore.walker import start_atoms
from eip_al.label.mock import MockWaterCalculator, water_energy_forces
from eip_al.systems import build_water_box
from tests.model_fixtures import torch_threads
from tests.test_explore import make_run, water_box
from tests.test_explore_batch import assert_same_walkers


class MockNPT(MockWaterCalculator):
    """q-SPC/Fw water with an isotropic stress from dE/dV (central difference, atoms scaled
    with the cell) and zero σ arrays, so the walker machinery runs on a physical potential."""

    implemented_properties = [*MockWaterCalculator.implemented_properties, "stress", "uncertainty",
                              "uncertainty_components", "aleatoric_components", "config_uncertainty"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):  # type: ignore[no-untyped-def]
        super().calculate(atoms, properties, system_changes)
        res, a, d = self.results, self.atoms, 1e-4
        energies = []
        for s in (1 + d, 1 - d):
            b = a.copy()
            b.set_cell(a.cell.array * s, scale_atoms=True)
            energies.append(water_energy_forces(b, self.ff)[0])
        # isotropic strain ε on all three axes: each diagonal stress is (1/V)·(dE/dε)/3
        p_virial = (energies[0] - energies[1]) / (2 * d) / (3 * a.get_volume())
        n = len(a)
        self.results = {**res, "stress": np.array([p_virial] * 3 + [0.0] * 3),
                        "uncertainty": np.zeros(n), "uncertainty_components": np.zeros((n, 3)),
                        "aleatoric_components": np.zeros((n, 3)), "config_uncertainty": 0.0}


def test_npt_berendsen_water_finds_and_keeps_a_sane_density(tmp_path: Path) -> None:
    """32 q-SPC/Fw waters started 12 % too dilute at 300 K, 1 bar: the barostat compresses
    them towards liquid density and no step leaves the sane window."""
    atoms = start_atoms(build_water_box(32, density_g_cm3=0.88, seed=1), 300.0, np.random.default_rng(0))
    wc = WalkerConfig(thermostat="npt_berendsen", steps=300, timestep_fs=0.5, tau_fs=50, taup_fs=100,
                      pressure_bar=1.0, sample_every=100)
    out = run_trajectory(atoms, MockNPT(), wc, CollapseConfig(learned_factor=None), tmp_path / "w.csv",
                         tmp_path / "w.extxyz")
    log = pd.read_csv(tmp_path / "w.csv")
    rho = log["density"].to_numpy()
    assert not out.collapsed and len(rho) == 301
    assert rho[0] == pytest.approx(0.88, abs=1e-3)
    assert rho[-50:].mean() > 0.93  # compressed (a wrong stress sign would expand it)
    assert 0.85 < rho.min() and rho.max() < 1.15
    assert np.allclose(log["volume"] * log["density"], log["volume"][0] * rho[0])  # mass conserved


def npt_config(batched: bool = False, steps: int = 16, integrator: str = "mtk") -> ALConfig:
    w = dict(kind="md", temperature_K=300, steps=steps, sample_every=4, thermostat=integrator, tau_fs=20,
             taup_fs=50, pressure_bar=1.0)
    return ALConfig(explore={
        "walkers": [w, {**w, "kind": "udd"}, {**w, "kind": "udd", "thermostat": "langevin"}],
        "device": "cpu", "restart_every": 5, "udd": {"A": 20.0, "B": 1.0}, "batched": batched,
        "collapse": {"learned_factor": None, "density_min_g_cm3": 0.05, "density_max_g_cm3": 5.0}})


def test_eip_npt_udd_walker_records_a_changing_density(tmp_path: Path) -> None:
    with torch_threads(1):
        res = run_walker(npt_config(), make_run(tmp_path, [water_box(seed=s) for s in range(2)]), 0, "udd-300K-0")
    log = pd.read_csv(tmp_path / "run" / res.log_csv)
    assert res.ensemble == "npt" and res.integrator == "mtk" and res.pressure_bar == 1.0
    assert res.steps_run > 4 and np.isfinite(log["density"]).all()
    assert log["volume"].std() > 0  # the cell moved
    assert res.density_min == pytest.approx(log["density"].min())
    assert res.bias_ratio_mean is not None and res.bias_ratio_mean > 0


@pytest.mark.parametrize("integrator", ["mtk", "npt_berendsen", "nose_hoover"])
def test_walker_resumes_to_the_same_trajectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               integrator: str) -> None:
    """Killed at step 12 (restart point at 10): the cell and the thermostat/barostat chains
    come back, so the resumed log equals the uninterrupted one."""
    frames = [water_box(seed=s) for s in range(2)]
    cfg = npt_config(integrator=integrator)
    with torch_threads(1):
        reference = run_walker(cfg, make_run(tmp_path / "a", [f.copy() for f in frames]), 0, "udd-300K-0")
        run = make_run(tmp_path / "b", [f.copy() for f in frames])
        real, calls = CollapseDetector.check, []

        def crashing(self, *args):  # type: ignore[no-untyped-def]
            calls.append(1)
            if len(calls) == 13:
                raise KeyboardInterrupt
            return real(self, *args)

        monkeypatch.setattr(CollapseDetector, "check", crashing)
        with pytest.raises(KeyboardInterrupt):
            run_walker(cfg, run, 0, "udd-300K-0")
        monkeypatch.setattr(CollapseDetector, "check", real)
        resumed = run_walker(cfg, run, 0, "udd-300K-0")
    a, b = pd.read_csv(run.abs(resumed.log_csv)), pd.read_csv(tmp_path / "a" / "run" / reference.log_csv)
    assert reference.steps_run > 12 and a["step"].tolist() == b["step"].tolist()
    assert (b["volume"].iloc[12:].std() > 0) == (integrator != "nose_hoover")
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=1e-12)


def test_batched_npt_and_nvt_walkers_match_one_by_one(tmp_path: Path) -> None:
    frames = [water_box(seed=s) for s in range(2)]
    with torch_threads(1):
        names = ["md-300K-0", "udd-300K-0", "udd-300K-1"]
        run_a, run_b = make_run(tmp_path / "a", [f.copy() for f in frames]), make_run(tmp_path / "b", frames)
        alone = run_walkers(npt_config(batched=False, steps=8), run_a, 0, names)
        batched = run_walkers(npt_config(batched=True, steps=8), run_b, 0, names)
    assert [r.ensemble for r in batched] == ["npt", "npt", "nvt"]
    assert_same_walkers(run_a, alone, run_b, batched)


def test_density_rule_only_for_npt_walkers() -> None:
    atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=[3.0] * 3, pbc=True)
    cfg = CollapseConfig(learned_factor=None)  # 18 amu in 27 Å³: 1.11 g/cm³
    args = (atoms.positions, 0.0, np.zeros((3, 3)), np.zeros(3), 300.0)
    npt = CollapseDetector(cfg, atoms, 300.0, variable_cell=True)
    assert npt.check(*args, atoms.cell.array) is None
    assert npt.check(*args, atoms.cell.array * 1.5).startswith("density: 0.328 g/cm³ outside [0.5, 1.5]")
    assert npt.check(*args, atoms.cell.array * 0.95) is None
    assert npt.check(*args, atoms.cell.array * 0.8).startswith("density: 2.")
    nvt = CollapseDetector(cfg.model_copy(update={"density_min_g_cm3": 2.0, "density_max_g_cm3": None}), atoms, 300.0)
    assert nvt.check(*args) is None  # an NVT box keeps its density: never judged
    off = CollapseDetector(cfg.model_copy(update={"density_min_g_cm3": None, "density_max_g_cm3": None}), atoms,
                           300.0, variable_cell=True)
    assert off.check(*args, atoms.cell.array * 1.5) is None
