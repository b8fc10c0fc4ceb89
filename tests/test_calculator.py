"""EIPCalculator: ASE results, neighbor-list reuse with a skin, bias results, batched frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eip_al.calculator import EIPCalculator
from eip_al.model import save_checkpoint
from tests.model_fixtures import tiny_model, torch_threads, water_box


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture
def checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "model.pt", tiny_model(2, dtype=torch.float64, init_std=0.2))


def test_results_and_shapes(checkpoint) -> None:
    atoms = water_box(8)
    atoms.calc = EIPCalculator(checkpoint, device="cpu")
    n = len(atoms)
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    calc = atoms.calc
    assert forces.shape == (n, 3) and np.isfinite(energy)
    assert calc.get_property("free_energy", atoms) == energy
    sigma = calc.get_property("uncertainty", atoms)
    comps = calc.get_property("uncertainty_components", atoms)
    alea = calc.get_property("aleatoric_components", atoms)
    assert sigma.shape == (n,) and comps.shape == (n, 3) and alea.shape == (n, 3)
    assert np.allclose(sigma, np.linalg.norm(comps, axis=1))
    assert calc.get_property("config_uncertainty", atoms) == pytest.approx(sigma.mean())
    assert calc.get_property("descriptor", atoms).shape == (16,)
    assert (comps > 0).all() and (alea > 0).all()
    assert "energy_bias" not in calc.results


def test_skin_reuse_gives_the_same_results_as_fresh_lists(checkpoint) -> None:
    """Small moves reuse the list, large ones rebuild it; results always equal a fresh build."""
    rng = np.random.default_rng(0)
    atoms = water_box(8, seed=1)
    cached = EIPCalculator(checkpoint, device="cpu", skin=0.6)
    for step in range(8):
        scale = 0.02 if step % 3 else 0.5  # every third step moves atoms beyond skin/2
        atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
        if step == 5:
            atoms.set_cell(atoms.cell.array * 1.03, scale_atoms=True)
        fresh = EIPCalculator(checkpoint, device="cpu", skin=0.0)
        for calc in (cached, fresh):
            calc.calculate(atoms, ["energy", "forces"])
        assert cached.results["energy"] == pytest.approx(fresh.results["energy"], rel=1e-12)
        assert np.allclose(cached.results["forces"], fresh.results["forces"], atol=1e-10)
        assert np.allclose(cached.results["uncertainty"], fresh.results["uncertainty"], atol=1e-12)


def test_bias_results(checkpoint) -> None:
    atoms = water_box(8, seed=2)

    def bias(sigma: torch.Tensor, n: int) -> torch.Tensor:
        return 50.0 * (torch.exp(-sigma / (n * 0.1)) - 1.0)

    plain = EIPCalculator(checkpoint, device="cpu")
    biased = EIPCalculator(checkpoint, device="cpu", bias=bias)
    plain.calculate(atoms, ["forces"])
    biased.calculate(atoms, ["forces"])
    assert np.allclose(biased.results["forces"], plain.results["forces"], atol=1e-12)
    n = len(atoms)
    expected = 50.0 * (np.exp(-plain.results["config_uncertainty"] / (n * 0.1)) - 1.0)
    assert biased.results["energy_bias"] == pytest.approx(expected, rel=1e-10)
    fb = biased.results["forces_bias"]
    assert fb.shape == (n, 3) and np.abs(fb).max() > 0
    assert np.abs(fb.sum(axis=0)).max() < 1e-9  # bias is translation invariant: no net force


def test_predict_frames_matches_single_calculations(checkpoint) -> None:
    frames = [water_box(8, seed=s) for s in range(5)] + [water_box(4, box=5.0, seed=7)]
    calc = EIPCalculator(checkpoint, device="cpu")
    batched = calc.predict_frames(frames, batch_size=4)
    assert len(batched) == len(frames)
    for atoms, res in zip(frames, batched, strict=True):
        calc.calculate(atoms, ["energy"])
        assert res["energy"] == pytest.approx(calc.results["energy"], rel=1e-12)
        assert res["config_uncertainty"] == pytest.approx(calc.results["config_uncertainty"], rel=1e-10)
        for key in ("forces", "uncertainty", "uncertainty_components", "aleatoric_components", "descriptor"):
            assert np.allclose(res[key], calc.results[key], atol=1e-10), key


def test_dtype_override_and_from_model(checkpoint) -> None:
    model = tiny_model(2, dtype=torch.float64, init_std=0.2)
    calc = EIPCalculator.from_model(model, dtype="float32")
    assert calc.model.dtype == torch.float32
    assert model.dtype == torch.float64 and all(p.requires_grad for p in model.parameters())
    atoms = water_box(8)
    calc.calculate(atoms, ["energy"])
    ref = EIPCalculator(checkpoint, device="cpu")
    ref.calculate(atoms, ["energy"])
    assert calc.results["energy"] == pytest.approx(ref.results["energy"], rel=1e-5)
    with pytest.raises(ValueError, match="dtype"):
        EIPCalculator(checkpoint, dtype="float16")
