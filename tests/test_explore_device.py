"""The device engine (eip_al/explore/device.py): the ASE engine's trajectories, logs, candidates,
collapses and results from one torch state; resume after a crash; physics of its integrator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import vesin
from ase import units
from pydantic import ValidationError

from eip_al.calculator import EIPCalculator
from eip_al.config import ALConfig, ExploreConfig, WalkerConfig
from eip_al.explore import CollapseDetector, run_walkers, walker_names
from eip_al.explore.device import DeviceEngine, DeviceWalker
from eip_al.explore.walker import explore_batched, prepare_walker, walker_checkpoint
from tests.test_explore import make_run, tiny_model
from tests.test_explore_batch import assert_same_walkers, crash_then_resume, frames

# a random model is no physical potential: only the non-finite and extreme checks stay on
LOOSE = {"learned_factor": None, "min_distance": 0.1, "covalent_factor": 0.1, "max_oh_bond": None,
         "max_temperature_factor": 100.0, "max_force": 1e4}


def config(engine: str, steps: int = 24, **collapse: object) -> ALConfig:
    """Two MD (Berendsen) and two UDD (Langevin) replicas, as tests/test_explore_batch.py."""
    w = dict(kind="md", temperature_K=300, steps=steps, sample_every=4, replicas=2)
    return ALConfig(explore={
        "walkers": [w, {**w, "kind": "udd", "thermostat": "langevin", "temperature_K": 350}],
        "device": "cpu", "restart_every": 5, "udd": {"B": 1.0, "target_bias_ratio": 0.3, "scale_frames": 2},
        "collapse": {"learned_factor": None, **collapse}, "engine": engine,
    })


def test_device_engine_matches_the_ase_engine(tmp_path: Path) -> None:
    """Same start frames, velocities and Langevin noise: logs, candidates, collapse steps and
    reasons and the results agree with one-by-one ASE walkers (float64 model)."""
    ase_run = make_run(tmp_path / "ase", frames())
    ref = run_walkers(config("ase"), ase_run, 0, walker_names(config("ase")))
    dev_run = make_run(tmp_path / "dev", frames())
    dev = run_walkers(config("device"), dev_run, 0, walker_names(config("device")))
    # random-model walkers stop at different steps (collapse): the batch shrank as they left
    assert len({r.steps_run for r in dev}) > 1 and any(r.collapsed for r in dev)
    assert_same_walkers(ase_run, ref, dev_run, dev)
    out = dev_run.step_dir(0, "explore")
    assert not list(out.glob("*.npz")) and not list(out.glob("*.part"))


def test_device_walker_crashing_resumes_from_its_restart_point(tmp_path: Path) -> None:
    """A walker whose host side fails mid-run (as a full disk would) stops alone; the others
    finish. Rerunning resumes it from its restart point and the run equals an uninterrupted one."""
    ref_run = make_run(tmp_path / "ref", frames())
    ref = run_walkers(config("device"), ref_run, 0, walker_names(config("device")))
    run = make_run(tmp_path / "run", frames())
    assert_same_walkers(ref_run, ref, run, crash_then_resume(config("device"), run))


def test_ase_restart_point_is_not_resumed_by_the_device_engine(tmp_path: Path) -> None:
    """Restart keys differ by engine: an interrupted ASE walker restarts from step 0 on the
    device engine (and still gives the uninterrupted device result)."""
    ref_run = make_run(tmp_path / "ref", frames())
    ref = run_walkers(config("device"), ref_run, 0, ["md-300K-0"])
    run = make_run(tmp_path / "run", frames())
    real, calls = CollapseDetector.check, [0]

    def crashing(self, *args):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 13:
            raise RuntimeError("killed")
        return real(self, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CollapseDetector, "check", crashing)
        with pytest.raises(RuntimeError):
            run_walkers(config("ase"), run, 0, ["md-300K-0"])
    assert (run.step_dir(0, "explore") / "md-300K-0.restart.npz").is_file()
    resumed = run_walkers(config("device"), run, 0, ["md-300K-0"])
    assert_same_walkers(ref_run, ref, run, resumed)


def test_verlet_lists_are_rebuilt_rarely_and_stay_exact(tmp_path: Path) -> None:
    """The skinned vesin-torch lists give the exact pairs within the cutoff at every step
    (checked against a fresh list) while rebuilding far less often than every step."""
    run = make_run(tmp_path, frames())
    cfg = config("device", steps=30, **LOOSE)
    template = EIPCalculator(walker_checkpoint(run, 0), device="cpu")
    job = prepare_walker(cfg, run, 0, "md-300K-0", base=EIPCalculator.sharing(template))
    engine = DeviceEngine(template)
    seen: list[int] = []
    real_pass = DeviceEngine._pass

    def checked(self, walkers):  # type: ignore[no-untyped-def]
        p = real_pass(self, walkers)
        (w,) = walkers
        i, j, _ = w.nl.compute(w.x, w.cell, w.pbc, "ijS")
        ref = vesin.NeighborList(cutoff=float(template.model.spec.cutoff), full_list=True)
        hi, hj = ref.compute(w.x.numpy(), w.cell.numpy(), True, "ij")
        assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == sorted(zip(hi.tolist(), hj.tolist(), strict=True))
        seen.append(len(hi))
        return p

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DeviceEngine, "_pass", checked)
        (res,) = engine.run([job])
    assert not isinstance(res, BaseException) and res.steps_run == 30 and len(seen) == 31
    assert len(set(seen)) > 1  # the pair count changed as the atoms moved


def test_berendsen_drives_the_temperature_to_its_target(tmp_path: Path) -> None:
    """Started at 600 K with a 10 fs coupling time the walker's temperature relaxes towards
    300 K (Berendsen: T − T0 decays like exp(−t/τ)), through the device integrator."""
    run = make_run(tmp_path, frames())
    cfg = ALConfig(explore={
        "walkers": [{"kind": "md", "temperature_K": 300, "steps": 120, "tau_fs": 10.0, "timestep_fs": 0.5}],
        "device": "cpu", "engine": "device",
        "collapse": LOOSE,
    })
    template = EIPCalculator(walker_checkpoint(run, 0), device="cpu")
    job = prepare_walker(cfg, run, 0, "md-300K-0", base=EIPCalculator.sharing(template))
    job.atoms.set_momenta(job.atoms.get_momenta() * np.sqrt(600.0 / job.atoms.get_temperature()))
    (res,) = DeviceEngine(template).run([job])
    assert not isinstance(res, BaseException) and not res.collapsed
    temps = pd.read_csv(run.abs(res.log_csv))["temperature"].to_numpy()
    assert temps[0] == pytest.approx(600.0, rel=1e-6)
    assert abs(temps[-20:].mean() - 300.0) < 0.3 * abs(temps[0] - 300.0)


def test_nve_limit_conserves_energy(tmp_path: Path) -> None:
    """With friction → 0 the Langevin update is velocity Verlet: E_pot + E_kin of an MD
    walker stays constant to O(dt²) (0.1 fs, 100 steps)."""
    run = make_run(tmp_path, frames(), model=tiny_model())
    cfg = ALConfig(explore={
        "walkers": [{"kind": "md", "thermostat": "langevin", "friction_per_fs": 1e-12, "temperature_K": 300,
                     "steps": 100, "timestep_fs": 0.1}],
        "device": "cpu", "engine": "device",
        "collapse": LOOSE,
    })
    (res,) = run_walkers(cfg, run, 0, walker_names(cfg))
    log = pd.read_csv(run.abs(res.log_csv))
    n_atoms = 24
    e_kin = 1.5 * n_atoms * units.kB * log["temperature"].to_numpy()
    total = log["energy"].to_numpy() + e_kin
    assert res.steps_run == 100 and np.ptp(total) < 1e-4  # eV; the kinetic energy swings ~1e-1 eV
    assert np.ptp(e_kin) > 1e-3


def test_device_engine_config() -> None:
    assert explore_batched(config("device")) is True  # always one batch
    with pytest.raises(ValidationError, match="engine 'device' integrates berendsen and langevin"):
        ExploreConfig(engine="device", walkers=[WalkerConfig(thermostat="nose_hoover")])
    with pytest.raises(ValidationError):
        ExploreConfig(engine="gpu")


def test_device_walker_refuses_an_unsupported_integrator(tmp_path: Path) -> None:
    """Below the config check too: a job with an NPT integrator gets a one-line error."""
    run = make_run(tmp_path, frames())
    cfg = config("ase")
    template = EIPCalculator(walker_checkpoint(run, 0), device="cpu")
    job = prepare_walker(cfg, run, 0, "md-300K-0", base=EIPCalculator.sharing(template))
    bad = job.plan.config.model_copy(update={"thermostat": "mtk"})
    job = type(job)(**{**job.__dict__, "plan": type(job.plan)(job.plan.name, bad, job.plan.index)})
    with pytest.raises(ValueError, match="md-300K-0: the device engine integrates berendsen, langevin"):
        DeviceWalker(job, template.model, DeviceEngine(template).species)
