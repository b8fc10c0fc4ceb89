"""Exploration: UDD bias forms and limiter, bias forces against finite differences, A = 0
equivalence of UDD and MD, collapse rules on constructed frames, and whole walkers on a
temporary run directory (logs/frames round trip, broken start, collapse cut-off, resume)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.io import read

from eip_al.calculator import EIPCalculator
from eip_al.config import ALConfig, CollapseConfig, UDDConfig, WalkerConfig
from eip_al.explore import (
    LOG_COLUMNS,
    CollapseDetector,
    UDDCalculator,
    explore_generation,
    kulichenko_bias,
    limit_bias_forces,
    reference_bias,
    run_trajectory,
    run_walker,
    walker_names,
)
from eip_al.explore import walker as walker_mod
from eip_al.explore.collapse import REASONS
from eip_al.explore.udd import atom_bias_ratios, scale_amplitude
from eip_al.explore.walker import start_atoms
from eip_al.io import write_frames
from eip_al.model import EIPModel, ModelSpec
from eip_al.model.checkpoint import save_checkpoint
from eip_al.rundir import RunDir
from eip_al.schemas import (
    DatasetManifest,
    ExplorationResult,
    TheoryFingerprint,
    TrainingResult,
    ValidationMetrics,
)
from eip_al.screening import build_screen, smallest_pair_distances


# ----------------------------------------------------------------------------- fixtures
def tiny_model(seed: int = 0) -> EIPModel:
    """A random float64 model (16 features, 1 interaction); default init keeps short MD sane."""
    torch.manual_seed(seed)
    spec = ModelSpec(n_features=16, n_interactions=1, cutoff=3.5, n_rbf=8, elements=(1, 8))
    return EIPModel(spec, element_energies=[-13.6, -430.0]).to(torch.float64)


def water_box(n_side: int = 2, box: float = 6.2, seed: int = 0) -> Atoms:
    """n_side³ randomly oriented H2O on a grid in a periodic cubic box (O, H, H order)."""
    rng = np.random.default_rng(seed)
    atoms = Atoms(cell=[box] * 3, pbc=True)
    for site in np.ndindex(n_side, n_side, n_side):
        m = molecule("H2O")
        m = m[[1, 2, 0]] if m[0].symbol != "O" else m
        m.rotate(rng.uniform(0, 360), rng.normal(size=3))
        m.translate((np.array(site) + 0.5) * box / n_side)
        atoms += m
    return atoms


def make_run(tmp_path: Path, frames: list[Atoms], model: EIPModel | None = None) -> RunDir:
    """A run directory with a generation-0 dataset and a 'trained' checkpoint."""
    run = RunDir(tmp_path / "run")
    ds = run.seed_dir / "dataset.extxyz"
    for a in frames:
        a.info["split"] = "train"
    write_frames(ds, frames)
    DatasetManifest(
        generation=-1, dataset_extxyz=run.rel(ds), n_frames=len(frames), counts_by_source={"seed": len(frames)},
        counts_by_generation={"-1": len(frames)}, split_counts={"train": len(frames)},
        theory=TheoryFingerprint(code="mock-qspcfw", method="q-SPC/Fw"),
        sha256=hashlib.sha256(ds.read_bytes()).hexdigest(),
    ).write(run.seed_dir / "artifact.json")
    ckpt = save_checkpoint(run.step_dir(0, "train") / "model.pt", model or tiny_model())
    TrainingResult(
        generation=0, checkpoint=run.rel(ckpt), metrics_csv="gen-000/train/metrics.csv",
        dataset=run.rel(ds), n_train=len(frames), n_valid=0, epochs_run=1, best_epoch=0,
        stopped_reason="max_epochs", device="cpu", wall_time_s=0.0,
        valid=ValidationMetrics(n_frames=0, energy_mae_per_atom=0, force_mae=0, force_rmse=0,
                                sigma_mean=0, aleatoric_mean=0),
        element_energies={"H": -13.6, "O": -430.0},
    ).write(run.artifact_path(0, "train"))
    return run


def config(**walker: object) -> ALConfig:
    w = dict(kind="md", temperature_K=300, steps=16, sample_every=4)
    w.update(walker)
    return ALConfig(
        explore={"walkers": [w, {**w, "kind": "udd"}], "device": "cpu", "restart_every": 5,
                 "udd": {"A": 20.0, "B": 1.0},
                 # random models have no bonds: only the floors here (learned limits: test below)
                 "collapse": {"learned_factor": None}}
    )


# ----------------------------------------------------------------------------- naming
def test_walker_names_unique_deterministic_and_counted_per_kind_and_temperature() -> None:
    cfg = ALConfig(explore={"walkers": [
        {"kind": "md", "temperature_K": 300, "replicas": 2},
        {"kind": "udd", "temperature_K": 300},
        {"kind": "md", "temperature_K": 300, "steps": 5},
        {"kind": "udd", "temperature_K": 312.5, "replicas": 2},
    ]})
    names = walker_names(cfg)
    assert names == ["md-300K-0", "md-300K-1", "udd-300K-0", "md-300K-2", "udd-312.5K-0", "udd-312.5K-1"]
    assert names == walker_names(cfg.model_copy(deep=True))
    with pytest.raises(ValueError, match="md-300K-0"):
        walker_mod.walker_plan(cfg, "md-900K-0")


# ----------------------------------------------------------------------------- bias and limiter
def test_bias_forms_on_constructed_values() -> None:
    A, B, n = 7.0, 0.5, 12
    ref, kul = reference_bias(A, B), kulichenko_bias(A, B)
    zero = torch.tensor(0.0, dtype=torch.float64)
    assert float(ref(zero, n)) == 0.0 and float(kul(zero, n)) == 0.0  # no bias without uncertainty
    # reference form halves exp at σ = N·B·ln 2; Kulichenko's at σ = B·sqrt(2 ln 2)
    assert float(ref(torch.tensor(n * B * math.log(2.0)), n)) == pytest.approx(-A / 2)
    assert float(kul(torch.tensor(B * math.sqrt(2 * math.log(2.0))), n)) == pytest.approx(-A / 2)
    assert float(kul(torch.tensor(1e3), n)) == pytest.approx(-A)  # saturates at −A
    # Kulichenko's force factor −dE/dσ peaks at σ = B
    s = torch.linspace(0.01, 3 * B, 601, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(kul(s, n).sum(), s)
    s = s.detach()
    assert float(s[int(torch.argmax(-grad))]) == pytest.approx(B, abs=3 * B / 600)
    with pytest.raises(ValueError, match="B must"):
        reference_bias(1.0, 0.0)


def test_limiter_matches_its_formula() -> None:
    C, D = 0.2, 1.5
    gain = D / (2 * math.pi * C**2)
    small = np.array([1e-6, -2e-6])
    assert limit_bias_forces(small, C, D) == pytest.approx(gain * small, rel=1e-9)  # small-force gain
    peak = D * math.exp(-0.5) / (2 * math.pi * C)
    assert limit_bias_forces(np.array([C, -C]), C, D) == pytest.approx([peak, -peak], rel=1e-12)
    grid = np.linspace(0, 10 * C, 100001)
    out = limit_bias_forces(grid, C, D)
    assert grid[np.argmax(out)] == pytest.approx(C, abs=2e-4)  # largest output at |F_b| = C
    assert out.max() == pytest.approx(peak, rel=1e-8)
    assert limit_bias_forces(np.array([50.0]), C, D)[0] < 1e-100  # huge bias forces vanish
    fb = np.random.default_rng(0).normal(scale=0.5, size=(7, 3))
    assert np.array_equal(limit_bias_forces(fb, C, D), -limit_bias_forces(-fb, C, D))  # odd, per component
    with pytest.raises(ValueError):
        limit_bias_forces(fb, 0.0, D)


@pytest.mark.parametrize("form", ["reference", "kulichenko"])
def test_bias_force_is_minus_gradient_of_bias_energy(form: str) -> None:
    """Limiter off: forces_bias = −∂E_bias/∂R by central differences, forces = F + F_b."""
    atoms = water_box(seed=1)
    calc = UDDCalculator(EIPCalculator.from_model(tiny_model()), UDDConfig(form=form, A=50.0, B=0.3, limiter=False))
    atoms.calc = calc
    atoms.get_forces()
    res = dict(calc.results)
    assert res["energy_bias"] < 0
    assert np.allclose(res["forces"], res["forces_model"] + res["forces_bias"], atol=1e-12)
    assert np.array_equal(res["forces_bias"], res["forces_bias_raw"])
    h = 1e-5
    for i, c in [(0, 0), (1, 2), (5, 1), (17, 0)]:
        e = []
        for sign in (1, -1):
            a = atoms.copy()
            a.positions[i, c] += sign * h
            a.calc = calc
            a.get_potential_energy()
            e.append(calc.results["energy_bias"])
        fd = -(e[0] - e[1]) / (2 * h)
        assert res["forces_bias"][i, c] == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_calculator_applies_limiter_per_component_and_reports_ratio() -> None:
    atoms = water_box(seed=2)
    udd = UDDConfig(A=50.0, B=0.3, limiter=True, C=0.2, D=1.5)
    calc = UDDCalculator(EIPCalculator.from_model(tiny_model()), udd)
    atoms.calc = calc
    atoms.get_forces()
    r = calc.results
    expected = r["forces_bias_raw"] * udd.D * np.exp(-r["forces_bias_raw"] ** 2 / (2 * udd.C**2)) / (2 * np.pi * udd.C**2)
    assert np.allclose(r["forces_bias"], expected, rtol=1e-12, atol=0)
    assert np.allclose(r["forces"] - r["forces_model"], expected, atol=1e-12)
    assert r["bias_ratio"] == pytest.approx(np.linalg.norm(expected) / np.linalg.norm(r["forces_model"]))
    assert r["sigma_max"] == pytest.approx(np.max(r["uncertainty"]))
    assert r["energy"] == pytest.approx(EIPCalculator.from_model(tiny_model()).get_potential_energy(atoms.copy()))


def test_udd_with_zero_A_reproduces_md_exactly(tmp_path: Path) -> None:
    model = tiny_model()
    wc = WalkerConfig(steps=12, sample_every=3)
    logs, frames = {}, {}
    for kind, calc in (("md", EIPCalculator.from_model(model)),
                       ("udd", UDDCalculator(EIPCalculator.from_model(model), UDDConfig(A=0.0)))):
        atoms = start_atoms(water_box(), 300.0, np.random.default_rng(3))
        out = run_trajectory(atoms, calc, wc, CollapseConfig(), tmp_path / f"{kind}.csv", tmp_path / f"{kind}.extxyz")
        assert not out.collapsed and out.steps_run == 12
        logs[kind] = pd.read_csv(tmp_path / f"{kind}.csv")
        frames[kind] = read(tmp_path / f"{kind}.extxyz", ":")
    cols = ["step", "time_fs", "energy", "energy_bias", "sigma", "sigma_max", "temperature", "bias_ratio",
            "bias_ratio_median", "bias_ratio_max"]
    assert np.array_equal(logs["md"][cols].to_numpy(), logs["udd"][cols].to_numpy())
    assert len(frames["md"]) == len(frames["udd"]) == 4
    for a, b in zip(frames["md"], frames["udd"], strict=True):
        assert np.array_equal(a.positions, b.positions)
        assert np.array_equal(a.arrays["uncertainty"], b.arrays["uncertainty"])


# ----------------------------------------------------------------------------- collapse rules
def _check(atoms: Atoms, cfg: CollapseConfig | None = None, temperature: float = 300.0,
           forces: np.ndarray | None = None, energy: float = 0.0) -> str | None:
    det = CollapseDetector(cfg or CollapseConfig(), atoms, 300.0)
    f = np.zeros((len(atoms), 3)) if forces is None else forces
    return det.check(atoms.positions, energy, f, np.ones(len(atoms)), temperature)


def test_collapse_rules_on_constructed_frames() -> None:
    ok = water_box()
    assert _check(ok) is None
    close = ok.copy()
    close.positions[3] = close.positions[0] + [0.3, 0.0, 0.0]  # an O 0.3 Å from another O
    assert _check(close).startswith("min_distance: O-O 0.300 Å < 0.792 Å (atoms 0 and 3)")
    across = ok.copy()  # the same close contact, but through the periodic boundary
    across.positions[0] = [0.1, 3.0, 3.0]
    across.positions[3] = [6.0, 3.0, 3.0]
    assert _check(across).startswith("min_distance")
    broken = ok.copy()
    o, h = broken.positions[0], broken.positions[1]
    broken.positions[1] = o + 1.9 * (h - o) / np.linalg.norm(h - o)  # H pulled 1.9 Å from its O
    assert _check(broken).startswith("molecule_broken: H atom 1")
    assert _check(broken, CollapseConfig(max_oh_bond=None)) is None  # check can be switched off
    assert _check(ok, temperature=901.0).startswith("temperature")
    assert _check(ok, temperature=899.0) is None
    f = np.zeros((len(ok), 3))
    f[4] = [0, 60.0, 0]
    assert _check(ok, forces=f).startswith("max_force: |F| on atom 4")
    nan = ok.copy()
    nan.positions[2, 1] = np.nan
    assert _check(nan).startswith("non_finite: positions")
    assert _check(ok, energy=math.inf).startswith("non_finite: energy")
    non_water = Atoms("CO2", positions=[[0, 0, 0], [1.16, 0, 0], [-1.16, 0, 0]], cell=[8] * 3, pbc=True)
    assert CollapseDetector(CollapseConfig(), non_water, 300).water is False


# ----------------------------------------------------------------------------- whole walkers
def test_walkers_write_logs_and_unlabelled_candidate_frames(tmp_path: Path) -> None:
    run = make_run(tmp_path, [water_box(seed=s) for s in range(3)])
    cfg = config()
    summary = explore_generation(cfg, run, 0)
    assert [w.walker for w in summary.walkers] == ["md-300K-0", "udd-300K-0"]
    md, udd = summary.walkers
    for res in summary.walkers:
        assert ExplorationResult.load(run.step_dir(0, "explore") / f"{res.walker}.json") == res
        assert not res.collapsed, res.collapse_reason
        assert res.steps_run == 16 and res.simulated_time_fs == pytest.approx(8.0)
        log = pd.read_csv(run.abs(res.log_csv))
        assert tuple(log.columns) == LOG_COLUMNS
        assert log["step"].tolist() == list(range(17))
        assert np.allclose(log["time_fs"], 0.5 * log["step"])
        frames = read(run.abs(res.frames_extxyz), ":")
        assert res.n_candidates == len(frames) == 4
        for a in frames:
            assert a.calc is None  # predictions are never stored as labels
            assert a.info["walker"] == res.walker and a.info["kind"] == a.info["source"] == res.kind
            assert a.info["generation"] == 0 and a.info["unphysical"] is False
            row = log[log["step"] == a.info["step"]].iloc[0]
            assert a.info["step"] % 4 == 0 and a.info["time_fs"] == row["time_fs"]
            assert a.info["config_uncertainty"] == row["sigma"]  # exact round trip (repr floats)
            assert a.info["energy_pred"] == row["energy"] and a.info["energy_bias"] == row["energy_bias"]
            assert a.arrays["uncertainty"].shape == (24,)
            assert a.arrays["uncertainty_components"].shape == a.arrays["aleatoric_components"].shape == (24, 3)
            # ASE writes per-atom arrays with 8 decimals
            assert np.mean(a.arrays["uncertainty"]) == pytest.approx(a.info["config_uncertainty"], abs=1e-8)
            assert np.max(a.arrays["uncertainty"]) == pytest.approx(a.info["sigma_max"], abs=1e-8)
        assert res.sigma_mean == pytest.approx(log["sigma"].mean())
        assert res.energy_std == pytest.approx(log["energy"].std(ddof=0))
    md_log, udd_log = (pd.read_csv(run.abs(r.log_csv)) for r in (md, udd))
    # same seed → same start; the bias acts from the first step on
    assert md_log["energy"].iloc[0] == udd_log["energy"].iloc[0]
    assert (md_log["energy_bias"] == 0).all() and (udd_log["energy_bias"] < 0).all()
    assert md.bias_ratio_mean is None and udd.bias_ratio_mean > 0
    assert md.bias_ratio_median is None and 0 < udd.bias_ratio_median <= udd.bias_ratio_max
    assert (md_log[["bias_ratio_median", "bias_ratio_max"]] == 0).all().all()
    assert (udd_log["bias_ratio_median"] <= udd_log["bias_ratio_max"]).all()
    assert md.min_pair_distance == udd.min_pair_distance and md.min_pair_distance["O-O"] == pytest.approx(0.792)
    assert not list(run.step_dir(0, "explore").glob("*.part")) and not list(run.step_dir(0, "explore").glob("*.npz"))


def test_overlapping_start_is_a_collapse_not_an_error(tmp_path: Path) -> None:
    broken = water_box()
    broken.positions[3] = broken.positions[0] + [0.2, 0.1, 0.0]
    run = make_run(tmp_path, [broken])
    res = run_walker(config(), run, 0, "udd-300K-0")
    assert res.collapsed and res.collapse_step == 0 and res.collapse_time_fs == 0.0
    assert res.collapse_reason.startswith("min_distance")
    assert res.steps_run == 0 and res.n_candidates == 0 and res.sigma_mean is None
    assert pd.read_csv(run.abs(res.log_csv)).empty
    assert run.abs(res.frames_extxyz).read_text() == ""


def test_no_frame_at_or_after_the_collapse_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A collapse injected at step 12 (a sampling step): the log ends at step 11, candidates at 8."""
    run = make_run(tmp_path, [water_box()])
    seen = []
    real = CollapseDetector.check

    def check(self, positions, energy, forces, sigma, temperature, cell=None):  # type: ignore[no-untyped-def]
        seen.append(len(seen))
        return "temperature: injected" if len(seen) == 13 else real(self, positions, energy, forces, sigma,
                                                                    temperature, cell)

    monkeypatch.setattr(CollapseDetector, "check", check)
    res = run_walker(config(), run, 0, "md-300K-0")
    assert res.collapsed and res.collapse_step == 12 and res.collapse_time_fs == 6.0
    assert res.collapse_reason == "temperature: injected" and res.steps_run == 12
    assert pd.read_csv(run.abs(res.log_csv))["step"].tolist() == list(range(12))
    assert [a.info["step"] for a in read(run.abs(res.frames_extxyz), ":")] == [4, 8]
    assert res.n_candidates == 2


def test_overdriven_udd_walker_collapses_cleanly(tmp_path: Path) -> None:
    """A huge unlimited bias tears the box apart long before plain MD from the same start
    fails; the walker reports it and keeps only sane frames."""
    run = make_run(tmp_path, [water_box()])
    cfg = config(steps=12)
    cfg.explore.udd = UDDConfig(A=1e6, B=0.5, limiter=False)
    res = run_walker(cfg, run, 0, "udd-300K-0")
    md = run_walker(cfg, run, 0, "md-300K-0")
    assert res.collapsed and res.collapse_step is not None and res.steps_run == res.collapse_step
    assert res.collapse_step < md.steps_run / 2
    assert res.collapse_reason.split(":")[0] in REASONS
    log = pd.read_csv(run.abs(res.log_csv))
    assert log["step"].tolist() == list(range(res.collapse_step))
    kept = list(range(4, res.collapse_step, 4))  # sample_every = 4
    assert res.n_candidates == len(kept)
    if kept:
        assert [a.info["step"] for a in read(run.abs(res.frames_extxyz), ":")] == kept


def test_interrupted_walker_resumes_from_its_restart_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = [water_box(seed=s) for s in range(2)]
    cfg = config(thermostat="langevin")  # exercises the saved thermostat RNG state too
    reference = run_walker(cfg, make_run(tmp_path / "a", [f.copy() for f in frames]), 0, "udd-300K-0")
    run = make_run(tmp_path / "b", [f.copy() for f in frames])

    class Crash(Exception):
        pass

    calls = []
    real = CollapseDetector.check

    def crashing(self, *args):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 13:  # dies at step 12, after the restart point of step 10
            raise Crash
        return real(self, *args)

    monkeypatch.setattr(CollapseDetector, "check", crashing)
    with pytest.raises(Crash):
        run_walker(cfg, run, 0, "udd-300K-0")
    out = run.step_dir(0, "explore")
    assert (out / "udd-300K-0.restart.npz").is_file() and not (out / "udd-300K-0.csv").exists()
    checked = []

    def counting(self, *args):  # type: ignore[no-untyped-def]
        checked.append(1)
        return real(self, *args)

    monkeypatch.setattr(CollapseDetector, "check", counting)
    resumed = run_walker(cfg, run, 0, "udd-300K-0")
    assert len(checked) == 6  # only steps 11..16 are integrated again
    a, b = pd.read_csv(run.abs(resumed.log_csv)), pd.read_csv(tmp_path / "a" / "run" / reference.log_csv)
    assert a["step"].tolist() == list(range(17))  # no row lost, none duplicated
    assert np.allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=1e-9)
    fa = read(run.abs(resumed.frames_extxyz), ":")
    fb = read(tmp_path / "a" / "run" / reference.frames_extxyz, ":")
    assert [x.info["step"] for x in fa] == [x.info["step"] for x in fb] == [4, 8, 12, 16]
    assert max(np.abs(x.positions - y.positions).max() for x, y in zip(fa, fb, strict=True)) < 1e-9
    assert resumed.n_candidates == 4 and not (out / "udd-300K-0.restart.npz").exists()


@pytest.mark.parametrize("damage", ["other key", "corrupt file"])
def test_stale_or_damaged_restart_is_ignored(tmp_path: Path, damage: str) -> None:
    run = make_run(tmp_path, [water_box()])
    out = run.step_dir(0, "explore")
    out.mkdir(parents=True, exist_ok=True)
    (out / "md-300K-0.csv.part").write_text("garbage\n")
    (out / "md-300K-0.extxyz.part").write_text("garbage\n")
    restart = out / "md-300K-0.restart.npz"
    if damage == "other key":
        np.savez(restart, positions=np.zeros((24, 3)), momenta=np.zeros((24, 3)),
                 meta='{"key": "someone else", "step": 8, "log_bytes": 3, "frames_bytes": 3}')
    else:
        restart.write_bytes(b"PK\x03\x04 truncated")
    res = run_walker(config(), run, 0, "md-300K-0")
    log = pd.read_csv(run.abs(res.log_csv))
    assert log["step"].tolist() == list(range(17)) and tuple(log.columns) == LOG_COLUMNS


def test_walker_seeds_pair_md_with_udd_but_never_repeat_within_a_kind() -> None:
    cfg = ALConfig(explore={"walkers": [{"kind": "md", "replicas": 2}, {"kind": "udd"}, {"kind": "md", "steps": 5}]})
    plans = {p.name: p for p in walker_mod.walker_plans(cfg)}

    def draws(name: str, gen: int = 0) -> list[float]:
        return [float(r.random()) for r in walker_mod.walker_seeds(plans[name], gen)]

    assert draws("md-300K-0") == draws("udd-300K-0")
    assert len({tuple(draws(n)) for n in ("md-300K-0", "md-300K-1", "md-300K-2")}) == 3
    assert draws("md-300K-0", 0) != draws("md-300K-0", 1)  # new generation, new start


# ----------------------------------------------------------------------------- robust UDD
def test_atom_bias_ratios_on_constructed_forces() -> None:
    f = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 0.0], [0, 0, 4.0]])
    fb = np.array([[0.5, 0, 0], [0, 0.2, 0], [3.0, 0, 0], [0, 0, 2.0]])
    med, mx = atom_bias_ratios(fb, f)  # atom 2 has no model force: left out
    assert med == pytest.approx(0.5) and mx == pytest.approx(0.5)
    assert atom_bias_ratios(fb, np.zeros_like(f)) == (0.0, 0.0)


@pytest.mark.parametrize("limiter", [False, True])
def test_bias_amplitude_scaled_to_target_ratio(limiter: bool) -> None:
    """The scaled A gives the target median |F_b|/|F| on the frames, for 24 and 81 atoms alike."""
    model = tiny_model()
    udd = UDDConfig(A=1.0, B=0.5, limiter=limiter)
    for box in (water_box(seed=1), water_box(n_side=3, box=9.3, seed=1)):
        frames = [box] + [water_box(n_side=2 if len(box) == 24 else 3, box=box.cell[0, 0], seed=s) for s in (2, 3)]
        scale = scale_amplitude(EIPCalculator.from_model(model), udd, frames, target=0.36)
        assert scale.achieved == pytest.approx(0.36, rel=1e-3)
        calc = UDDCalculator(EIPCalculator.from_model(model), udd.model_copy(update={"A": scale.A}))
        ratios = []
        for a in frames:
            a = a.copy()
            a.calc = calc
            a.get_forces()
            ratios.append(calc.results["bias_ratio"])
        assert float(np.median(ratios)) == pytest.approx(0.36, rel=1e-3)


def test_weak_model_udd_walker_stays_physical_or_stops_with_reason(tmp_path: Path) -> None:
    """A random (untrained) model under a strong bias: every logged frame and candidate passes
    the shared screen; if the walker stops, the reason is a collapse rule."""
    run = make_run(tmp_path, [water_box(seed=s) for s in range(3)], model=tiny_model(seed=5))
    cfg = config(steps=60, sample_every=2)
    cfg.explore.udd = UDDConfig(target_bias_ratio=2.0, scale_frames=3)
    cfg.explore.collapse = CollapseConfig()  # learned limits from the seed frames
    res = run_walker(cfg, run, 0, "udd-300K-0")
    assert res.udd_A is not None and res.udd_target_ratio == 2.0
    screen = build_screen(cfg.explore.collapse, [1, 8], smallest_pair_distances(read(run.abs("seed/dataset.extxyz"), ":")))
    assert screen.thresholds == res.min_pair_distance
    for a in read(run.abs(res.frames_extxyz), ":"):
        assert screen.check(a) is None
    if res.collapsed:
        assert res.collapse_reason.split(":")[0] in REASONS
        assert res.n_candidates == len(range(2, res.collapse_step, 2))
