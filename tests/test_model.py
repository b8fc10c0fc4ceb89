"""Physics checks of the eIP model: symmetry, exact forces, periodic images, batching, bias."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from scipy.spatial.transform import Rotation

from eip_al.io import FrameError
from eip_al.model import ElementError
from eip_al.model.neighbors import SpeciesMap, collate, frame_graph
from tests.model_fixtures import tiny_model, torch_threads, water_box


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


def predict(model, atoms: Atoms, **kw) -> dict[str, torch.Tensor]:
    g = frame_graph(atoms, SpeciesMap(model.spec.elements), model.spec.cutoff).to("cpu", model.dtype)
    return model.predict(g, **kw)


def transformed(atoms: Atoms, seed: int) -> tuple[Atoms, np.ndarray, np.ndarray]:
    """Randomly rotated (cell too), translated and permuted copy; returns (atoms, R, perm)."""
    rng = np.random.default_rng(seed)
    rot = Rotation.random(random_state=seed).as_matrix()
    perm = rng.permutation(len(atoms))
    out = atoms[perm]
    out.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    out.positions = atoms.positions[perm] @ rot.T + rng.normal(scale=3.0, size=3)
    return out, rot, perm


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_energy_invariant_forces_equivariant(seed: int) -> None:
    model = tiny_model(seed)
    atoms = water_box(8, seed=seed)
    ref = predict(model, atoms)
    moved, rot, perm = transformed(atoms, seed)
    out = predict(model, moved)
    e0, e1 = ref["energy"].item(), out["energy"].item()
    assert abs(e1 - e0) <= 1e-8 * abs(e0)
    f0 = ref["forces"].detach().numpy()[perm] @ rot.T
    f1 = out["forces"].detach().numpy()
    assert np.abs(f1 - f0).max() <= 1e-8 * np.abs(f0).max()
    assert np.abs(f0).max() > 0.1  # the check is not vacuous
    d0 = ref["descriptor"].detach().numpy()
    assert np.allclose(out["descriptor"].detach().numpy(), d0, rtol=1e-8, atol=1e-10)


def test_wrapping_positions_changes_nothing() -> None:
    model = tiny_model(0)
    atoms = water_box(8, seed=4)
    atoms.positions += np.array([7.0, -9.0, 13.0])  # far outside the cell
    wrapped = atoms.copy()
    wrapped.wrap()
    a, b = predict(model, atoms), predict(model, wrapped)
    assert abs(a["energy"].item() - b["energy"].item()) < 1e-9 * abs(a["energy"].item())
    assert torch.allclose(a["forces"], b["forces"], atol=1e-10)


def test_forces_match_central_finite_differences() -> None:
    model = tiny_model(5)
    atoms = water_box(8, seed=5)
    atoms.set_cell(atoms.cell.array + np.array([[0, 0.4, 0], [0.3, 0, 0], [0, -0.2, 0]]), scale_atoms=True)
    forces = predict(model, atoms)["forces"].detach().numpy()
    h = 1e-5
    rng = np.random.default_rng(0)
    for i in rng.choice(len(atoms), size=6, replace=False):
        for c in range(3):
            energies = []
            for sign in (1, -1):
                shifted = atoms.copy()
                shifted.positions[i, c] += sign * h
                energies.append(predict(model, shifted)["energy"].item())
            fd = -(energies[0] - energies[1]) / (2 * h)
            assert fd == pytest.approx(forces[i, c], abs=1e-6, rel=1e-6)


def test_cell_smaller_than_cutoff_matches_supercell() -> None:
    """Several periodic images of one pair inside the cutoff: E(2x2x2) = 8 E(cell) exactly."""
    model = tiny_model(6)
    atoms = molecule("H2O")
    atoms.set_cell([[2.9, 0, 0], [0.4, 3.1, 0], [0.2, 0.3, 3.0]])
    atoms.pbc = True
    atoms.positions += 1.0
    assert model.spec.cutoff > 3.1  # images are neighbors: no minimum-image shortcut works
    small = predict(model, atoms)
    big = predict(model, atoms.repeat((2, 2, 2)))
    assert big["energy"].item() == pytest.approx(8 * small["energy"].item(), rel=1e-12)
    f_small = small["forces"].detach().numpy()
    f_big = big["forces"].detach().numpy().reshape(8, len(atoms), 3)
    assert np.abs(f_big - f_small[None]).max() < 1e-9
    assert np.abs(f_small).max() > 0.1


def test_batched_prediction_equals_single_frames() -> None:
    model = tiny_model(7)
    frames = [water_box(8, seed=s) for s in range(3)] + [water_box(4, box=5.0, seed=9)]
    species = SpeciesMap(model.spec.elements)
    graphs = [frame_graph(a, species, model.spec.cutoff) for a in frames]
    batch = model.predict(collate(graphs))
    singles = [model.predict(g) for g in graphs]
    assert torch.allclose(batch["energy"], torch.cat([s["energy"] for s in singles]), rtol=1e-12)
    assert torch.allclose(batch["forces"], torch.cat([s["forces"] for s in singles]), atol=1e-11)
    assert torch.allclose(batch["sigma_config"], torch.cat([s["sigma_config"] for s in singles]))
    assert torch.allclose(batch["descriptor"], torch.cat([s["descriptor"] for s in singles]))


def test_open_boundary_molecule() -> None:
    model = tiny_model(8)
    mol = molecule("H2O")
    out = predict(model, mol)
    # no cell: the net force of an isolated molecule vanishes (translation invariance)
    assert np.abs(out["forces"].detach().numpy().sum(axis=0)).max() < 1e-10


def test_unknown_element_is_named() -> None:
    model = tiny_model(0)
    atoms = water_box(2, box=4.0) + Atoms("C", positions=[[2.0, 2.0, 2.0]])
    with pytest.raises(ElementError, match=r"\['C'\]"):
        predict(model, atoms)


def test_bias_forces_come_from_the_same_pass_and_match_finite_differences() -> None:
    model = tiny_model(9)
    atoms = water_box(8, seed=9)
    a_bias, b_bias = 3.0, 0.7

    def bias(sigma: torch.Tensor, n: int) -> torch.Tensor:
        return a_bias * (torch.exp(-(sigma**2) / (2 * b_bias**2)) - 1.0)

    plain = predict(model, atoms)
    biased = predict(model, atoms, bias=bias)
    assert torch.allclose(plain["forces"], biased["forces"], atol=1e-12)  # forces stay unbiased
    sigma = biased["sigma_config"].item()
    assert biased["energy_bias"].item() == pytest.approx(bias(torch.tensor(sigma), len(atoms)).item())
    fb = biased["forces_bias"].detach().numpy()
    assert np.abs(fb).max() > 1e-4
    h = 1e-5
    for i, c in [(0, 0), (5, 1), (17, 2), (22, 0)]:
        e = []
        for sign in (1, -1):
            shifted = atoms.copy()
            shifted.positions[i, c] += sign * h
            e.append(predict(model, shifted, bias=bias)["energy_bias"].item())
        assert -(e[0] - e[1]) / (2 * h) == pytest.approx(fb[i, c], abs=1e-7, rel=1e-5)


def test_model_has_paper_size_by_default() -> None:
    from eip_al.config import ModelConfig
    from eip_al.model import EIPModel, ModelSpec

    model = EIPModel(ModelSpec.from_config(ModelConfig(), [1, 8]))
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n_params < 0.7e6  # "about 0.6 M parameters" (docs/eip-method §1)


def test_bad_geometry_is_a_clear_frame_error() -> None:
    model = tiny_model(0)
    periodic_without_cell = molecule("H2O")
    periodic_without_cell.pbc = True
    with pytest.raises(FrameError, match="periodic along cell vector 0"):
        predict(model, periodic_without_cell)
    exploded = water_box(2, box=4.0)
    exploded.positions[1, 2] = np.nan
    with pytest.raises(FrameError, match="NaN"):
        predict(model, exploded)
