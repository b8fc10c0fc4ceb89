"""The ensemble uncertainty source and the one training loop (docs/model.md, "Uncertainty sources")."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from bench import baselines
from eip_al.calculator import EIPCalculator
from eip_al.config import ModelConfig, TrainConfig
from eip_al.model.checkpoint import load_checkpoint, read_payload, save_checkpoint
from eip_al.model.eip import EIPModel, ModelSpec, PlainPaiNN
from eip_al.model.ensemble import EnsembleModel
from eip_al.model.errors import CheckpointError
from eip_al.model.evaluation import frames_to_graphs
from eip_al.train import train_ensemble, train_model
from tests.model_fixtures import TINY, labelled_water_frames, tiny_model, torch_threads, water_box

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


def random_member(seed: int) -> PlainPaiNN:
    torch.manual_seed(seed)
    model = PlainPaiNN(ModelSpec(elements=(1, 8), **TINY), element_energies=[-13.6, -432.0])
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.to(torch.float64)


@pytest.fixture
def ensemble_checkpoint(tmp_path) -> Path:
    return save_checkpoint(tmp_path / "model.pt", EnsembleModel([random_member(k) for k in range(3)]))


def smooth_bias(sigma: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """A smooth, non-linear, non-saturating E_bias(σ) (eV): enough to test the chain rule through σ."""
    return 0.1 * n_atoms * torch.log1p(sigma)


def central_difference(calc: EIPCalculator, atoms: Atoms, i: int, c: int, key: str, h: float = 1e-5) -> float:
    """d results[key] / d x_ic of `calc` at `atoms` by central differences (step h, Å)."""
    values = []
    for sign in (1, -1):
        b = atoms.copy()
        b.positions[i, c] += sign * h
        calc.calculate(b, ["energy"])
        values.append(calc.results[key])
    return (values[0] - values[1]) / (2 * h)


def test_ensemble_sigma_is_the_spread_of_independently_predicted_members(ensemble_checkpoint) -> None:
    atoms = water_box(4, box=5.0, seed=3)
    calc = EIPCalculator(ensemble_checkpoint, device="cpu")
    calc.calculate(atoms, ["energy"])
    members = [random_member(k) for k in range(3)]  # rebuilt from their seeds, not from the file
    runs = [baselines.predict_plain(m, frames_to_graphs([atoms], m))[0] for m in members]
    forces = np.stack([r["forces"] for r in runs])
    by_hand = np.linalg.norm(forces.std(axis=0, ddof=1), axis=-1)
    assert np.allclose(calc.results["uncertainty"], by_hand, rtol=1e-10)
    assert np.allclose(calc.results["uncertainty_components"], forces.std(axis=0, ddof=1), rtol=1e-10)
    assert calc.results["config_uncertainty"] == pytest.approx(by_hand.mean(), rel=1e-10)
    assert np.allclose(calc.results["forces"], forces.mean(axis=0), atol=1e-12)
    assert calc.results["energy"] == pytest.approx(np.mean([r["energy"] for r in runs]), rel=1e-12)
    assert calc.results["descriptor"].shape == (TINY["n_features"],)
    assert not calc.results["aleatoric_components"].any()  # an ensemble has no noise estimate


def test_ensemble_forces_are_minus_energy_gradient(ensemble_checkpoint) -> None:
    atoms = water_box(4, box=5.0, seed=4)
    calc = EIPCalculator(ensemble_checkpoint, device="cpu", skin=0.0)
    calc.calculate(atoms, ["energy"])
    forces = calc.results["forces"].copy()
    for i, c in ((0, 0), (5, 2), (9, 1)):
        assert forces[i, c] == pytest.approx(-central_difference(calc, atoms, i, c, "energy"), rel=1e-5, abs=1e-7)


def test_ensemble_udd_bias_forces_match_finite_differences(ensemble_checkpoint) -> None:
    atoms = water_box(4, box=5.0, seed=5)
    calc = EIPCalculator(ensemble_checkpoint, device="cpu", skin=0.0, bias=smooth_bias)
    calc.calculate(atoms, ["energy"])
    f_bias = calc.results["forces_bias"].copy()
    assert calc.results["energy_bias"] == pytest.approx(
        float(smooth_bias(torch.tensor(calc.results["config_uncertainty"], dtype=torch.float64), len(atoms))), rel=1e-10)
    assert np.abs(f_bias).max() > 1e-6  # the bias acts
    for i, c in ((1, 0), (6, 1), (10, 2)):
        assert f_bias[i, c] == pytest.approx(-central_difference(calc, atoms, i, c, "energy_bias"), rel=1e-4, abs=1e-7)


def test_ensemble_sigma_is_rotation_invariant(ensemble_checkpoint) -> None:
    atoms = water_box(4, box=5.0, seed=6)
    atoms.pbc = False
    atoms.cell = None
    atoms.center(vacuum=4.0)
    calc = EIPCalculator(ensemble_checkpoint, device="cpu")
    calc.calculate(atoms, ["energy"])
    sigma = calc.results["uncertainty"].copy()
    turned = atoms.copy()
    turned.rotate(73.0, (1.0, -2.0, 0.5), center="COM")
    calc.calculate(turned, ["energy"])
    assert np.allclose(calc.results["uncertainty"], sigma, rtol=1e-7, atol=1e-10)


def test_checkpoint_kinds_round_trip_and_old_checkpoints_load_as_evidential(tmp_path, ensemble_checkpoint) -> None:
    old = save_checkpoint(tmp_path / "eip.pt", tiny_model(1))
    assert "kind" not in read_payload(old)  # the eIP payload is the format every older checkpoint has
    assert isinstance(load_checkpoint(old, "cpu")[0], EIPModel)
    model, meta = load_checkpoint(ensemble_checkpoint, "cpu")
    assert isinstance(model, EnsembleModel) and len(model.members) == 3 and meta["kind"] == "ensemble"
    payload = read_payload(ensemble_checkpoint)
    payload["n_members"] = 1
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="n_members"):
        load_checkpoint(tmp_path / "bad.pt", "cpu")


def test_one_training_loop_trains_both_eip_and_plain_models(tmp_path) -> None:
    """eIP (evidential loss) and plain PaiNN (MSE) both go through eip_al.fit.fit: both lower
    their training loss on a tiny set, and no other module builds an optimizer or steps one."""
    frames = labelled_water_frames(8, seed=7, n_molecules=4, box=5.0)
    model_cfg = ModelConfig(**TINY, dtype="float64")
    cfg = TrainConfig(epochs=6, batch_size=2, lr=3e-3, device="cpu", early_stopping_patience=50)
    eip = train_model(frames[:6], frames[6:], model_cfg, cfg, tmp_path / "eip", progress=False)
    _, log = baselines.train_plain(frames[:6], frames[6:], model_cfg, cfg, cache=tmp_path / "plain")
    import pandas as pd

    eip_loss = pd.read_csv(eip.metrics_csv)["train_loss"].to_numpy()
    assert eip_loss[-1] < eip_loss[0] and log.train_loss[-1] < log.train_loss[0]
    assert (tmp_path / "plain" / "last.pt").is_file() and len(log.epoch_cpu_s) == log.epochs_run == 6
    loops = []
    for path in [*(ROOT / "eip_al").rglob("*.py"), *(ROOT / "bench").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("AdamW", "clip_grad_norm_", "ReduceLROnPlateau"):
                loops.append(str(path.relative_to(ROOT)))
    assert set(loops) <= {"eip_al/fit.py", "bench/bench_uq.py"}, loops  # bench_uq: the epoch-cost probe only


def test_train_ensemble_saves_all_members_in_one_checkpoint(tmp_path) -> None:
    frames = labelled_water_frames(8, seed=8, n_molecules=4, box=5.0)
    model_cfg = ModelConfig(**TINY, dtype="float64", uncertainty="ensemble", ensemble_size=2)
    cfg = TrainConfig(epochs=2, batch_size=2, lr=1e-3, device="cpu", seed=5)
    out = train_ensemble(frames[:6], frames[6:], model_cfg, cfg, tmp_path, progress=False)
    model, meta = load_checkpoint(out.checkpoint, "cpu")
    assert isinstance(model, EnsembleModel) and len(model.members) == 2 and len(meta["extra"]["members"]) == 2
    for k in range(2):  # member k is exactly the loop's best model of seed 5 + k
        member = read_payload(tmp_path / f"member-{k}" / "model.pt")
        assert member["kind"] == "plain"
        for name, value in member["state_dict"].items():
            assert torch.equal(model.members[k].state_dict()[name], value)
    assert out.valid.sigma_mean > 0 and out.valid.aleatoric_mean == 0
    assert out.calibration is None or out.calibration.is_file()
    again = train_ensemble(frames[:6], frames[6:], model_cfg, cfg, tmp_path, progress=False)  # resumed, not redone
    assert again.epochs_run == out.epochs_run and again.valid == out.valid
    warm = train_ensemble(frames[:6], frames[6:], model_cfg, cfg, tmp_path / "warm", init_checkpoint=out.checkpoint,
                          progress=False)
    assert warm.warm_started_from == out.checkpoint
    with pytest.raises(CheckpointError, match="cannot warm start an ensemble"):
        train_ensemble(frames[:6], frames[6:], model_cfg, cfg, tmp_path / "bad",
                       init_checkpoint=save_checkpoint(tmp_path / "eip.pt", tiny_model(0)), progress=False)


def test_batched_replicas_of_an_ensemble_match_single_evaluation(ensemble_checkpoint) -> None:
    from eip_al.explore.batch import ReplicaBatch

    frames: list[Atoms] = [water_box(4, box=5.0, seed=s) for s in (11, 12)]
    single = EIPCalculator(ensemble_checkpoint, device="cpu", bias=smooth_bias)
    batch = ReplicaBatch(EIPCalculator(ensemble_checkpoint, device="cpu"))
    pairs = [(batch.calculator(), a) for a in frames]
    pairs[0][0].bias = smooth_bias

    def job(calc, atoms):
        calc.calculate(atoms, ["energy"])
        return dict(calc.results)

    got = batch.run([(c, lambda c=c, a=a: job(c, a)) for c, a in pairs])
    single.calculate(frames[0], ["energy"])
    assert np.allclose(got[0]["forces_bias"], single.results["forces_bias"], atol=1e-10)
    assert np.allclose(got[0]["uncertainty"], single.results["uncertainty"], atol=1e-12)
    assert "forces_bias" not in got[1]


@pytest.mark.filterwarnings("ignore:Please use `ase.calculators.fd:FutureWarning")
def test_ensemble_stress_equals_numerical_stress_for_npt(ensemble_checkpoint) -> None:
    """The ensemble's stress (member mean, one strain pass each) is the strain derivative of its
    energy, so NPT walkers can run on an ensemble; with a bias also that of E_bias(σ)."""
    from tests.test_stress import strained_box

    atoms = strained_box()
    atoms.calc = EIPCalculator(ensemble_checkpoint, device="cpu")
    stress = atoms.get_stress()
    numerical = atoms.calc.calculate_numerical_stress(atoms, d=1e-5)
    assert np.abs(stress).max() > 1e-4
    assert np.abs(stress - numerical).max() < 1e-7 * max(1.0, np.abs(stress).max())
    model, _ = load_checkpoint(ensemble_checkpoint, "cpu")
    (g,) = frames_to_graphs([atoms], model)

    def e_bias(a: Atoms) -> float:
        (h,) = frames_to_graphs([a], model)
        return float(model.predict(h, bias=smooth_bias)["energy_bias"][0])

    with torch.enable_grad():
        out = model.predict(g, bias=smooth_bias, stress=True)
    # (1/V) dE_bias/dε_xy by central differences of a symmetric shear of positions and cell
    d, vol = 1e-5, atoms.get_volume()
    shifted = []
    for sign in (1, -1):
        eps = np.eye(3)
        eps[0, 1] = eps[1, 0] = sign * d / 2
        b = atoms.copy()
        b.set_cell(atoms.cell.array @ eps, scale_atoms=True)
        shifted.append(e_bias(b))
    fd = (shifted[0] - shifted[1]) / (2 * d) / vol
    assert float(out["stress_bias"][0, 0, 1]) == pytest.approx(fd, rel=1e-5, abs=1e-9)
