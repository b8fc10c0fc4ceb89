"""Walker integrators and biases plug in by registry: a dummy integrator (plain NVE velocity
Verlet) and a dummy bias (no forces at all) registered at runtime run a real walker, and
the config's validation and JSON schema offer them, without any other file changed."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase import units
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read
from ase.md.verlet import VelocityVerlet

from eip_al import config
from eip_al.config import ALConfig, WalkerConfig
from eip_al.explore import run_walker
from eip_al.explore.biases import PreparedBias
from eip_al.registries import BiasEntry, WalkerEntry
from tests.model_fixtures import torch_threads
from tests.test_explore import make_run, water_box


class ForceFree(Calculator):
    """The model's results with every force zeroed: free flight."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, base: Calculator):
        super().__init__()
        self.base = base

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):  # type: ignore[no-untyped-def]
        super().calculate(atoms, properties, system_changes)
        self.base.calculate(self.atoms, ["energy", "forces"], all_changes)
        self.results = {**self.base.results, "forces": np.zeros((len(self.atoms), 3))}


def plugin(name: str, **attrs: object) -> str:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return name


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    nve = plugin("dummy_nve", STATE=(), make=lambda atoms, wc, rng: VelocityVerlet(atoms, wc.timestep_fs * units.fs))
    free = plugin("dummy_free", prepare=lambda base, explore, frames, label: PreparedBias(ForceFree(base), {"free": 1}))
    monkeypatch.setitem(config.WALKERS, "nve", WalkerEntry(nve, "nvt", ()))
    monkeypatch.setitem(config.BIASES, "free", BiasEntry(free, None))
    yield
    for name in (nve, free):
        sys.modules.pop(name)


def test_registered_integrator_and_bias_are_config_choices(registered: None) -> None:
    schema = WalkerConfig.model_json_schema()["properties"]
    assert "nve" in schema["thermostat"]["enum"] and "free" in schema["kind"]["enum"]
    assert WalkerConfig(kind="free", thermostat="nve").thermostat == "nve"
    with pytest.raises(ValueError, match="must be one of md, udd, free"):
        WalkerConfig(kind="frozen")


def test_registered_integrator_and_bias_run_a_walker(registered: None, tmp_path: Path) -> None:
    """With no forces, velocity Verlet is free flight: x(t) = x0 + p0·t/m for every frame."""
    cfg = ALConfig(explore={"walkers": [{"kind": "free", "thermostat": "nve", "steps": 12, "sample_every": 4}],
                            "device": "cpu", "collapse": {"learned_factor": None}})
    run = make_run(tmp_path, [water_box()])
    with torch_threads(1):
        res = run_walker(cfg, run, 0, "free-300K-0")
    assert res.kind == "free" and res.integrator == "nve" and res.steps_run == 12 and not res.collapsed
    assert res.bias_ratio_mean == 0.0  # a biased kind: statistics kept (its calculator reports none)
    log = pd.read_csv(run.abs(res.log_csv))
    assert np.ptp(log["temperature"]) < 1e-9  # free flight keeps the kinetic energy
    frames = read(run.abs(res.frames_extxyz), ":")
    assert [f.info["step"] for f in frames] == [4, 8, 12]
    x4, x8, x12 = (f.positions for f in frames)
    np.testing.assert_allclose(x12 - x8, x8 - x4, atol=3e-8)  # straight lines (extxyz keeps 8 decimals)
    assert np.abs(x8 - x4).max() > 1e-3


def test_unknown_integrator_or_kind_is_one_config_line() -> None:
    with pytest.raises(config.ConfigError, match=r"explore\.walkers\.0\.thermostat: must be one of berendsen, "
                                                 r"langevin, nose_hoover, npt_berendsen, mtk \(got 'nh'\)$"):
        config.config_from_mapping({"explore": {"walkers": [{"thermostat": "nh"}]}})
    with pytest.raises(config.ConfigError, match=r"explore\.walkers\.0\.kind: must be one of md, udd \(got 'x'\)$"):
        config.config_from_mapping({"explore": {"walkers": [{"kind": "x"}]}})
