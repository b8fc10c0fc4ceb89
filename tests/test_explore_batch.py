"""Batched walker replicas (eip_al/explore/batch.py): the same trajectories, logs, candidates
and results as one walker after another; per-graph UDD biases; resume after a crash inside
a batch; NVE energy conservation and F = −∂E/∂R through the batched pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet

from eip_al.calculator import EIPCalculator
from eip_al.config import ALConfig, UDDConfig
from eip_al.explore import CollapseDetector, ReplicaBatch, UDDCalculator, run_walkers, walker_names
from eip_al.explore.udd import make_bias
from eip_al.explore.walker import start_atoms
from eip_al.model.neighbors import SpeciesMap, collate, frame_graph
from eip_al.rundir import RunDir
from eip_al.schemas import ExplorationResult
from tests.test_explore import make_run, tiny_model, water_box

VOLATILE = {"created_at", "wall_time_s", "files"}  # result fields that differ between two equal runs


def config(batched: bool, steps: int = 24) -> ALConfig:
    """Two MD (Berendsen) and two UDD (Langevin) replicas: every per-walker state differs."""
    w = dict(kind="md", temperature_K=300, steps=steps, sample_every=4, replicas=2)
    return ALConfig(explore={
        "walkers": [w, {**w, "kind": "udd", "thermostat": "langevin", "temperature_K": 350}],
        # UDD amplitude scaled per walker on the shared model before the batch starts
        "device": "cpu", "restart_every": 5, "udd": {"B": 1.0, "target_bias_ratio": 0.3, "scale_frames": 2},
        "collapse": {"learned_factor": None}, "batched": batched,
    })


def frames() -> list:
    return [water_box(seed=s) for s in range(3)]


def assert_same_walkers(run_a, a, run_b, b) -> None:
    """Results (but wall time), logs and candidate frames of two runs agree."""
    assert [x.walker for x in a] == [y.walker for y in b]
    for x, y in zip(a, b, strict=True):
        dx, dy = x.model_dump(exclude=VOLATILE), y.model_dump(exclude=VOLATILE)
        assert dx.keys() == dy.keys()
        for key, value in dx.items():
            assert value == (pytest.approx(dy[key], rel=1e-9) if isinstance(value, float) else dy[key]), key
        la, lb = pd.read_csv(run_a.abs(x.log_csv)), pd.read_csv(run_b.abs(y.log_csv))
        assert la.shape == lb.shape
        np.testing.assert_allclose(la.to_numpy(), lb.to_numpy(), rtol=1e-9, atol=1e-12)
        fa, fb = read(run_a.abs(x.frames_extxyz), ":"), read(run_b.abs(y.frames_extxyz), ":")
        assert [f.info["step"] for f in fa] == [f.info["step"] for f in fb]
        for f, g in zip(fa, fb, strict=True):
            np.testing.assert_allclose(f.positions, g.positions, rtol=0, atol=1e-9)


def test_batched_walkers_match_one_by_one(tmp_path: Path) -> None:
    seq_run = make_run(tmp_path / "seq", frames())
    seq = run_walkers(config(False), seq_run, 0, walker_names(config(False)))
    bat_run = make_run(tmp_path / "bat", frames())
    bat = run_walkers(config(True), bat_run, 0, walker_names(config(True)))
    assert len(bat) == 4 and len({r.kind for r in bat}) == 2
    assert len({pd.read_csv(bat_run.abs(r.log_csv))["energy"].iloc[1] for r in bat}) == 4  # all distinct
    # random-model walkers stop at different steps: the batch shrank as they left it
    assert len({r.steps_run for r in bat}) > 1
    assert_same_walkers(seq_run, seq, bat_run, bat)
    out = bat_run.step_dir(0, "explore")
    assert not list(out.glob("*.npz")) and not list(out.glob("*.part"))


class Crash(Exception):
    """A walker dying mid-run (as after kill -9), raised from inside its collapse check."""


def crash_then_resume(cfg: ALConfig, run: RunDir) -> list[ExplorationResult]:
    """Run `cfg`'s four walkers with udd-350K-0 (the third to start) dying at step 12: the
    others finish and it keeps its restart point; then rerun them all and return the results."""
    real = CollapseDetector.check
    calls: dict[int, int] = {}  # per detector, in the order walkers start

    def crashing(self, *args):  # type: ignore[no-untyped-def]
        calls[id(self)] = calls.get(id(self), 0) + 1
        if list(calls).index(id(self)) == 2 and calls[id(self)] == 13:  # udd-350K-0 dies at step 12
            raise Crash
        return real(self, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CollapseDetector, "check", crashing)
        with pytest.raises(Crash):
            run_walkers(cfg, run, 0, walker_names(cfg))
    out = run.step_dir(0, "explore")
    assert sorted(p.name for p in out.glob("*.json")) == ["md-300K-0.json", "md-300K-1.json", "udd-350K-1.json"]
    assert (out / "udd-350K-0.restart.npz").is_file()
    return run_walkers(cfg, run, 0, walker_names(cfg))


def test_walker_crashing_inside_a_batch_resumes_from_its_restart_point(tmp_path: Path) -> None:
    """A walker that dies mid-batch (as after kill -9) does not stop the others; rerunning
    the batch resumes it from its restart file and the run equals an uninterrupted one."""
    ref_run = make_run(tmp_path / "ref", frames())
    ref = run_walkers(config(False), ref_run, 0, walker_names(config(False)))
    run = make_run(tmp_path / "run", frames())
    assert_same_walkers(ref_run, ref, run, crash_then_resume(config(True), run))


def test_per_graph_biases_in_one_pass() -> None:
    """A mixed batch: the MD frame gets no bias, each UDD frame its own, as if alone."""
    model = tiny_model()
    species = SpeciesMap(model.spec.elements)
    graphs = [frame_graph(water_box(seed=s), species, model.spec.cutoff) for s in range(3)]
    biases = [None, make_bias(UDDConfig(A=20.0, B=1.0)), make_bias(UDDConfig(A=5.0, B=0.5))]
    out = model.predict(collate(graphs), bias=biases)
    n = graphs[0].n_atoms
    for k, (g, b) in enumerate(zip(graphs, biases, strict=True)):
        alone = model.predict(g, bias=b)
        sl = slice(k * n, (k + 1) * n)
        torch.testing.assert_close(out["forces"][sl], alone["forces"], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(out["sigma_atom"][sl], alone["sigma_atom"], rtol=1e-10, atol=1e-12)
        if b is None:
            assert out["energy_bias"][k] == 0 and not out["forces_bias"][sl].any()
        else:
            torch.testing.assert_close(out["forces_bias"][sl], alone["forces_bias"], rtol=1e-10, atol=1e-12)
    assert "energy_bias" not in model.predict(collate(graphs), bias=[None] * 3)


def test_batched_forces_are_minus_energy_gradient() -> None:
    """Central differences of the batched pass's energy, frame by frame."""
    batch = ReplicaBatch(EIPCalculator.from_model(tiny_model()))
    calcs = [batch.calculator() for _ in range(2)]
    systems = [water_box(seed=s) for s in range(2)]
    rng = np.random.default_rng(0)

    def probe(k: int) -> tuple[np.ndarray, list[float]]:
        atoms, calc = systems[k], calcs[k]
        atoms.calc = calc
        forces = atoms.get_forces().copy()
        diffs = []
        for atom, axis in zip(rng.integers(len(atoms), size=4), rng.integers(3, size=4), strict=True):
            es = []
            for h in (1e-5, -1e-5):
                a = atoms.copy()
                a.positions[atom, axis] += h
                a.calc = calc
                es.append(a.get_potential_energy())
            diffs.append((-(es[0] - es[1]) / 2e-5, forces[atom, axis]))
        return forces, diffs

    for _, diffs in batch.run([(c, lambda k=k: probe(k)) for k, c in enumerate(calcs)]):  # type: ignore[misc]
        for fd, f in diffs:
            assert fd == pytest.approx(f, rel=1e-6, abs=1e-8)
    assert batch.rounds > 0 and batch.frames == 2 * batch.rounds  # both frames in every pass


def test_nve_energy_is_conserved_with_batched_replicas() -> None:
    """Velocity Verlet with two replicas and a UDD replica sharing passes: the unbiased
    replicas conserve E_pot + E_kin."""
    batch = ReplicaBatch(EIPCalculator.from_model(tiny_model()))
    md = [batch.calculator() for _ in range(2)]
    udd = UDDCalculator(batch.calculator(), UDDConfig(A=20.0, B=1.0))
    systems = [start_atoms(water_box(seed=s), 300.0, np.random.default_rng(s)) for s in range(3)]

    def nve(atoms, calc) -> list[float]:  # type: ignore[no-untyped-def]
        atoms.calc = calc
        dyn = VelocityVerlet(atoms, 0.1 * units.fs)
        energies = []
        for _ in range(100):
            dyn.run(1)
            energies.append(atoms.get_total_energy())
        return energies

    work = [(md[0], lambda: nve(systems[0], md[0])), (md[1], lambda: nve(systems[1], md[1])),
            (udd.base, lambda: nve(systems[2], udd))]
    runs = batch.run(work)  # type: ignore[arg-type]
    for energies in runs[:2]:
        assert not isinstance(energies, BaseException)
        assert np.ptp(energies) < 1e-4  # eV over 10 fs for 24 atoms (measured ~4e-6)
    assert batch.frames > batch.rounds  # passes were shared


def test_failing_replica_does_not_block_the_others() -> None:
    batch = ReplicaBatch(EIPCalculator.from_model(tiny_model()))
    calcs = [batch.calculator() for _ in range(3)]

    def walk(k: int) -> float:
        atoms = water_box(seed=k)
        atoms.calc = calcs[k]
        e = 0.0
        for step in range(5):
            if k == 1 and step == 2:
                raise RuntimeError("boom")
            atoms.positions += 0.001
            e = atoms.get_potential_energy()
        return e

    out = batch.run([(c, lambda k=k: walk(k)) for k, c in enumerate(calcs)])
    assert isinstance(out[1], RuntimeError) and all(isinstance(out[k], float) for k in (0, 2))


def test_pipeline_explore_step_runs_the_batch_and_the_flow_task_exists(tmp_path: Path) -> None:
    from eip_al import pipeline
    from flows import al

    run = make_run(tmp_path, frames())
    cfg = config(True, steps=8)
    assert pipeline.explore_batched(cfg) and not pipeline.explore_batched(config(False))
    auto = cfg.model_copy(update={"explore": cfg.explore.model_copy(update={"batched": "auto", "device": "cpu"})})
    assert pipeline.explore_batched(auto)  # auto batches on CPU too (measured 1.17-1.51x at 4 replicas) ...
    dask = auto.model_copy(update={"flow": auto.flow.model_copy(update={"task_runner": "dask"})})
    assert not pipeline.explore_batched(dask)  # ... but not where a Dask cluster spreads the walkers
    summary = pipeline.explore_step(cfg, run, 0)
    assert [w.walker for w in summary.walkers] == walker_names(cfg)
    assert al.walkers_task.fn(cfg, str(run.root), 0, walker_names(cfg)) == summary.walkers  # all skipped
