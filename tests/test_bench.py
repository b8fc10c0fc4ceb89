"""Smoke tests of bench/: UQ metric code on constructed data, the baselines, the sweep rule,
the overhead accounting and the summarizer. No timing is asserted anywhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from eip_al import metrics
from eip_al.config import ModelConfig, TrainConfig
from eip_al.io import attach_labels
from eip_al.model.evaluation import frames_to_graphs
from tests.conftest import WATER_DFT
from tests.model_fixtures import TINY, labelled_water_frames, torch_threads

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import baselines  # noqa: E402
import bench_overhead  # noqa: E402
import bench_uq  # noqa: E402
import summarize  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


# ----------------------------------------------------------------------------- metric code
def constructed(n_frames: int, n_atoms: int, seed: int) -> tuple[list[Atoms], np.ndarray]:
    """Frames with zero reference forces and predictions with known per-atom errors."""
    rng = np.random.default_rng(seed)
    frames, errors = [], []
    for _ in range(n_frames):
        a = Atoms("H" * n_atoms, positions=rng.random((n_atoms, 3)), cell=[5, 5, 5], pbc=True)
        frames.append(attach_labels(a, -1.0 * n_atoms, np.zeros((n_atoms, 3))))
        errors.append(rng.gamma(2.0, 0.1, n_atoms) * rng.uniform(0.5, 2.0))  # frames differ in scale
    return frames, np.array(errors)


def preds_with(errors: np.ndarray, sigma: np.ndarray | None, seed: int = 0) -> list[dict]:
    """Predicted forces whose per-atom error norm is exactly `errors` (random directions)."""
    rng = np.random.default_rng(seed)
    out = []
    for e, s in zip(errors, sigma if sigma is not None else [None] * len(errors), strict=True):
        d = rng.standard_normal((e.size, 3))
        p = {"energy": -1.0 * e.size + 0.01 * e.size, "forces": d / np.linalg.norm(d, axis=1, keepdims=True) * e[:, None]}
        if s is not None:
            p["uncertainty"], p["config_uncertainty"] = s, float(s.mean())
        out.append(p)
    return out


def test_perfect_sigma_scores_one_and_inverted_scores_zero() -> None:
    frames, err = constructed(20, 30, seed=0)
    m = bench_uq.evaluate(frames, preds_with(err, 2.0 * err + 0.1), bootstrap=20)
    for key in ("spearman_atom", "roc_auc_atom", "spearman_config", "roc_auc_config"):
        assert m[key] == pytest.approx(1.0)
    assert m["spearman_atom_ci95"] == pytest.approx([1.0, 1.0])
    assert m["energy_mae_per_atom"] == pytest.approx(0.01)
    assert m["error_mean"] == pytest.approx(err.mean())
    bad = bench_uq.evaluate(frames, preds_with(err, 1.0 / err), bootstrap=20)
    assert bad["spearman_atom"] == pytest.approx(-1.0)
    assert bad["roc_auc_atom"] == pytest.approx(0.0)


def test_random_sigma_scores_chance() -> None:
    # 5000 atoms, 1000 of them "bad": under the null the ROC-AUC has standard deviation
    # sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg)) = 0.010 and Spearman 1/sqrt(n - 1) = 0.014;
    # the tolerances (0.05, 0.06) are ~4-5 sigma, so a correct metric fails with p < 1e-4.
    frames, err = constructed(100, 50, seed=1)
    sigma = np.random.default_rng(2).random(err.shape)
    m = bench_uq.evaluate(frames, preds_with(err, sigma), bootstrap=20)
    assert m["n_atoms"] == 5000
    assert abs(m["roc_auc_atom"] - 0.5) < 0.05
    assert abs(m["spearman_atom"]) < 0.06
    lo, hi = m["roc_auc_atom_ci95"]
    assert lo < m["roc_auc_atom"] < hi and hi - lo < 0.15


def test_partially_informative_sigma_ranks_between() -> None:
    frames, err = constructed(40, 40, seed=3)
    noisy = err * np.exp(np.random.default_rng(4).normal(0, 0.7, err.shape))
    m = bench_uq.evaluate(frames, preds_with(err, noisy), bootstrap=20)
    assert 0.6 < m["roc_auc_atom"] < 0.99 and 0.3 < m["spearman_atom"] < 0.99


def test_evaluate_agrees_with_the_trainers_validation_metrics() -> None:
    from eip_al.model.evaluation import evaluation_metrics

    frames, err = constructed(12, 20, seed=6)
    sigma = err * np.exp(np.random.default_rng(7).normal(0, 0.5, err.shape))
    preds = preds_with(err, sigma)
    for p in preds:
        p["aleatoric_components"] = np.zeros((len(p["forces"]), 3))
    ours, ref = bench_uq.evaluate(frames, preds, bootstrap=5), evaluation_metrics(frames, preds)
    for key in ("force_mae", "force_rmse", "energy_mae_per_atom", "spearman_atom", "roc_auc_atom",
                "spearman_config", "roc_auc_config", "sigma_mean"):
        assert ours[key] == pytest.approx(getattr(ref, key)), key


def test_element_only_sigma_has_no_within_element_skill() -> None:
    # O atoms (every 3rd) get 2x larger errors; sigma knows only the element: it ranks the pooled
    # atoms well but carries no information within O or within H.
    rng = np.random.default_rng(8)
    frames, errors, sigmas = [], [], []
    for _ in range(30):
        a = Atoms("OH2" * 10, positions=rng.random((30, 3)) * 5, cell=[5, 5, 5], pbc=True)
        frames.append(attach_labels(a, -30.0, np.zeros((30, 3))))
        is_o = a.numbers == 8
        errors.append(rng.gamma(4.0, 0.02, 30) * np.where(is_o, 2.0, 1.0))
        sigmas.append(np.where(is_o, 0.2, 0.1))
    m = bench_uq.evaluate(frames, preds_with(np.array(errors), np.array(sigmas)), bootstrap=5)
    assert m["roc_auc_atom"] > 0.75
    assert set(m["by_element"]) == {"H", "O"}
    for el in m["by_element"].values():
        assert el["roc_auc_atom"] == pytest.approx(0.5) and el["spearman_atom"] is None  # constant sigma
    assert m["by_element"]["O"]["n_atoms"] == 300 and m["by_element"]["H"]["n_atoms"] == 600


def test_authors_auc_swaps_roles_and_takes_the_best_threshold() -> None:
    """σ = error: perfect for both variants; the authors' variant labels by σ, scores by error."""
    rng = np.random.default_rng(3)
    err = rng.gamma(2.0, 0.1, 500)
    assert bench_uq.authors_roc_auc(err, err) == pytest.approx(1.0)
    noisy = err + rng.normal(scale=0.05, size=500)
    by_hand = max(
        metrics.roc_auc(err, noisy > np.quantile(noisy, t)) for t in np.linspace(0.05, 0.95, 19)
    )
    assert bench_uq.authors_roc_auc(noisy, err) == pytest.approx(by_hand)
    assert bench_uq.authors_roc_auc(rng.random(500), err) == pytest.approx(0.5, abs=0.1)


def test_rotation_stability_and_shift_response_on_constructed_values() -> None:
    numbers = [np.array([1, 1, 8, 8, 1, 8]), np.array([8, 1, 1, 8, 1, 8])]
    sigma = [np.array([0.1, 0.3, 0.5, 0.9, 0.2, 0.7]), np.array([0.6, 0.2, 0.1, 0.4, 0.3, 0.8])]
    same = bench_uq.rotation_stability(numbers, sigma, [s * 2 for s in sigma])  # a monotone change keeps ranks
    assert all(v["spearman_pooled"] == pytest.approx(1.0) for v in same.values())
    flipped = bench_uq.rotation_stability(numbers, sigma, [-s for s in sigma])
    assert all(v["spearman_frame_median"] == pytest.approx(-1.0) for v in flipped.values())
    sets = {"id": {"sigma_mean": 0.2, "error_mean": 0.1}, "hot": {"sigma_mean": 0.3, "error_mean": 0.2},
            "none": {"sigma_mean": None, "error_mean": 0.3}}
    assert bench_uq.shift_response(sets, "id") == {
        "hot": {"sigma_ratio": pytest.approx(1.5), "error_ratio": pytest.approx(2.0),
                "sigma_over_error_ratio": pytest.approx(0.75)}}


def test_rotated_frames_rotate_positions_cell_and_forces() -> None:
    frames, _ = constructed(2, 6, seed=1)
    for a, b in zip(frames, bench_uq.rotated(frames), strict=True):
        assert np.allclose(np.linalg.norm(b.positions - b.positions[0], axis=1),
                           np.linalg.norm(a.positions - a.positions[0], axis=1))
        assert abs(b.cell.volume - a.cell.volume) < 1e-9 and b.get_potential_energy() == a.get_potential_energy()


def test_no_sigma_gives_accuracy_only() -> None:
    frames, err = constructed(5, 10, seed=5)
    m = bench_uq.evaluate(frames, preds_with(err, None))
    assert m["spearman_atom"] is None and m["roc_auc_config_ci95"] is None
    assert m["force_rmse"] == pytest.approx(np.sqrt(np.mean(err**2) / 3))


def test_spread_sigma_is_norm_of_component_std() -> None:
    samples = np.zeros((4, 2, 3))
    samples[:, 0, 0] = [1.0, -1.0, 1.0, -1.0]  # std (ddof=1) = sqrt(4/3) along x
    samples[:, 1, :] = [[0, 0, 0], [0, 2, 0], [0, 0, 2], [0, 2, 2]]
    sigma = baselines.spread_sigma(samples)
    assert sigma[0] == pytest.approx(np.sqrt(4 / 3))
    assert sigma[1] == pytest.approx(np.sqrt(2 * 4 / 3))
    with pytest.raises(ValueError):
        baselines.spread_sigma(samples[:1])


# ----------------------------------------------------------------------------- baselines
MODEL = ModelConfig(**TINY, dtype="float64")
CFG = TrainConfig(epochs=1, batch_size=2, lr=1e-3, device="cpu", seed=0)


@pytest.fixture(scope="module")
def tiny_frames() -> list[Atoms]:
    return labelled_water_frames(6, seed=7, n_molecules=4, box=5.0)


def test_plain_forces_are_minus_energy_gradient(tiny_frames) -> None:
    model = baselines.new_plain_model(tiny_frames, MODEL, dropout=0.0, seed=3)
    atoms = tiny_frames[0].copy()
    (p,) = baselines.predict_plain(model, frames_to_graphs([atoms], model))
    h, k = 1e-5, (2, 1)
    energies = []
    for sign in (1, -1):
        b = atoms.copy()
        b.positions[k] += sign * h
        energies.append(baselines.predict_plain(model, frames_to_graphs([b], model))[0]["energy"])
    assert p["forces"][k] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), rel=1e-5, abs=1e-7)


def test_each_baseline_trains_and_gives_sigma_of_right_shape(tiny_frames, tmp_path) -> None:
    train, valid = tiny_frames[:4], tiny_frames[4:]
    n_atoms = [len(a) for a in valid]
    plain, log = baselines.train_plain(train, valid, MODEL, CFG, cache=tmp_path / "plain")
    assert log.epochs_run == 1 and np.isfinite(log.valid_loss[0])
    graphs = frames_to_graphs(valid, plain)
    out = baselines.predict_plain(plain, graphs)
    assert [p["forces"].shape for p in out] == [(n, 3) for n in n_atoms] and "uncertainty" not in out[0]
    again, log2 = baselines.train_plain(train, valid, MODEL, CFG, cache=tmp_path / "plain")
    assert log2 == log and np.allclose(baselines.predict_plain(again, graphs)[0]["forces"], out[0]["forces"])

    members, logs = baselines.train_ensemble(train, valid, MODEL, CFG, n_members=2)
    ens = baselines.predict_ensemble(members, graphs)
    assert [p["uncertainty"].shape for p in ens] == [(n,) for n in n_atoms]
    assert all((p["uncertainty"] > 0).all() for p in ens)  # members differ (different seeds)
    f0 = baselines.predict_plain(members[0], graphs)[0]["forces"]
    f1 = baselines.predict_plain(members[1], graphs)[0]["forces"]
    assert np.allclose(ens[0]["forces"], (f0 + f1) / 2)

    drop, _ = baselines.train_plain(train, valid, MODEL, CFG, dropout=0.2)
    mc = baselines.predict_mc_dropout(drop, graphs, n_samples=4, seed=1)
    assert [p["uncertainty"].shape for p in mc] == [(n,) for n in n_atoms]
    assert all((p["uncertainty"] > 0).all() for p in mc)
    assert np.allclose(mc[0]["forces"], baselines.predict_mc_dropout(drop, graphs, n_samples=4, seed=1)[0]["forces"])
    det = baselines.predict_plain(drop, graphs)  # dropout is off again after sampling
    assert np.allclose(det[0]["forces"], baselines.predict_plain(drop, graphs)[0]["forces"])
    with pytest.raises(ValueError):
        baselines.predict_mc_dropout(plain, graphs)


def test_epoch_cost_probe_runs_every_method(tiny_frames, monkeypatch) -> None:
    monkeypatch.setattr(bench_uq, "MODEL", MODEL)
    probe = bench_uq.epoch_cost_probe("cpu", tiny_frames[:4], tiny_frames[4:], rounds=1)
    assert set(probe["medians"]) == {"eIP", "eIP paper head", "plain PaiNN", "MC-dropout p=0.1", "ensemble ×4"}
    for cost in probe["medians"].values():
        assert np.isfinite(cost["epoch_wall_s"]) and np.isfinite(cost["epoch_cpu_s"])
    assert probe["medians"]["ensemble ×4"]["epoch_cpu_s"] == pytest.approx(4 * probe["medians"]["plain PaiNN"]["epoch_cpu_s"])


# ----------------------------------------------------------------------------- data, sweep rule
@pytest.mark.skipif(not WATER_DFT.exists(), reason="shared DFT data not present")
def test_dft_split_is_by_time_and_disjoint() -> None:
    parts = bench_uq.dft_split(bench_uq.dft_frames(WATER_DFT))
    steps = {k: [int(a.info["ipi_step"]) for a in v] for k, v in parts.items()}
    assert [len(v) for v in steps.values()] == [70, 10, 31]
    assert max(steps["train"]) < min(steps["valid"]) and max(steps["valid"]) < min(steps["test"])


def test_mock_relabel_matches_force_field() -> None:
    from eip_al.label.mock import water_energy_forces
    from eip_al.systems import build_water_box

    atoms = build_water_box(8, seed=1)
    (out,) = bench_uq.mock_relabel([atoms])
    e, f = water_energy_forces(atoms)
    assert out.get_potential_energy() == pytest.approx(e) and np.allclose(out.get_forces(), f)


def run(label: str, f_mae: float, score: float, e_mae: float = 0.001) -> dict:
    return {"label": label, "sets": {"valid": {"force_mae": f_mae, "energy_mae_per_atom": e_mae}},
            "selection_score": score}


def test_choose_prefers_best_score_within_accuracy_guards() -> None:
    runs = [run("accurate", 0.10, 0.70), run("good", 0.109, 0.80), run("inaccurate", 0.111, 0.95),
            run("bad-energy", 0.05, 0.99, e_mae=0.02)]
    # the bad-energy run is excluded first, so it neither wins nor tightens the force guard
    assert bench_uq.choose(runs, energy_limit=0.004)["label"] == "good"
    assert bench_uq.choose(runs)["label"] == "bad-energy"  # no energy bar
    assert bench_uq.choose(runs[3:], energy_limit=0.004)["label"] == "bad-energy"  # none passes: all runs


def test_constant_energy_mae_is_mean_absolute_deviation_from_train_mean() -> None:
    def frame(e_per_atom: float) -> Atoms:
        return attach_labels(Atoms("H2", positions=[[0, 0, 0], [0, 0, 1]]), 2 * e_per_atom, np.zeros((2, 3)))

    train, valid = [frame(-1.0), frame(-3.0)], [frame(-2.5), frame(-1.0)]
    assert bench_uq.constant_energy_mae(train, valid) == pytest.approx((0.5 + 1.0) / 2)


# ----------------------------------------------------------------------------- overhead
def test_overhead_record_subtracts_work_per_step() -> None:
    steps = {"train": 10.0, "explore": 6.0, "select": 0.5, "label": 3.0, "merge": 0.2, "report": 1.3}
    work = {"train_s": 9.0, "md_s": 5.5, "label_s": 2.0}
    rec = bench_overhead.overhead_record(1, sum(steps.values()), work, steps)
    assert rec["overhead_s"] == pytest.approx(21.0 - 16.5)
    assert rec["step_overhead_s"] == pytest.approx(
        {"train": 1.0, "explore": 0.5, "select": 0.5, "label": 1.0, "merge": 0.2, "report": 1.3})
    assert sum(rec["step_overhead_s"].values()) == pytest.approx(rec["overhead_s"])


# ----------------------------------------------------------------------------- summarizer
def fake_metrics(rho: float | None) -> dict:
    uq = {"spearman_atom": rho, "roc_auc_atom": rho, "spearman_config": rho, "roc_auc_config": rho}
    return {"force_mae": 0.1, "force_rmse": 0.15, "energy_mae_per_atom": 0.002, "error_mean": 0.2,
            "sigma_mean": None if rho is None else 0.1, **uq,
            **{f"{k}_ci95": None if rho is None else [rho - 0.05, rho + 0.05] for k in uq}}


def test_summarizer_renders_every_result_file(tmp_path) -> None:
    machine = {"cpu": "Test CPU 9000", "cpu_count": 2, "torch": "2.13.0", "torch_threads": 1,
               "load_average_1_5_15": [1.0, 2.0, 3.0]}
    git = {"commit": "0123456789abcdef", "dirty": True}
    hot = fake_metrics(0.73) | {"sigma_mean": 0.2, "error_mean": 0.3, "roc_auc_atom_authors": 0.81, "by_element": {
        "H": {"spearman_atom": 0.05, "roc_auc_atom": 0.52, "roc_auc_atom_authors": 0.6},
        "O": {"spearman_atom": -0.01, "roc_auc_atom": 0.5, "roc_auc_atom_authors": 0.55}},
        "rotation_stability": {"H": {"spearman_pooled": 1.0, "spearman_frame_median": 0.99994},
                               "O": {"spearman_pooled": 0.12, "spearman_frame_median": -0.05}}}
    method = {"sets": {"test_id": fake_metrics(0.73), "test_hot": hot},
              "train": {"n_models": 1, "epochs_run": 20, "wall_s_per_epoch": 3.0, "cpu_s_per_epoch": 2.0,
                        "wall_s": 60.0}, "inference": {"wall_s_per_frame": 0.02, "cpu_s_per_frame": 0.01, "passes": 1}}
    plain = method | {"sets": {"test_id": fake_metrics(None), "test_hot": fake_metrics(None)}}
    uq = {"benchmark": "uq", "date": "2026-01-02T03:04:05+00:00", "git": git, "machine": machine,
          "settings": {"dropout": 0.1}, "tracks": {"mock": {"methods": {"eIP": method, "plain PaiNN": plain}, "epoch_cost_probe": {
              "rounds": 3, "note": "n", "medians": {"eIP": {"epoch_wall_s": 2.0, "epoch_cpu_s": 1.0},
                                                    "plain PaiNN": {"epoch_wall_s": 1.5, "epoch_cpu_s": 0.8}}}}}}
    generic = {"benchmark": "explore", "created_at": "2026-01-01", "machine": machine,
               "steps_per_s": {"md": 12.5, "udd": 10.0}, "all": list(range(10))}
    overhead = {"benchmark": "overhead", "date": "2026-01-03", "git": git, "machine": machine,
                "generations": [{"generation": 0, "total_s": 30.0, "train_s": 20.0, "md_s": 5.0, "label_s": 1.0,
                                 "overhead_s": 4.0, "overhead_fraction": 4 / 30}],
                "overhead_by_step": {"report": 3.0}, "prefect": None}
    for name, content in (("uq.json", uq), ("explore.json", generic), ("overhead.json", overhead)):
        (tmp_path / name).write_text(json.dumps(content))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "odd.json").write_text(json.dumps({"benchmark": "uq", "tracks": {"x": {}}}))
    out = summarize.main(["--results", str(tmp_path), "--out", str(tmp_path / "B.md")])
    text = out.read_text()
    assert "Test CPU 9000" in text and "`0123456789`" in text and "2026-01-02T03:04:05" in text
    assert "0.730 [0.68, 0.78]" in text  # UQ table cell with its bootstrap interval
    assert "| mock: test_id | 0.730 / 0.730 |" in text  # headline: methods with a sigma only
    assert "| mock: test_hot | 0.730 / 0.730 (H 0.52, O 0.50) |" in text
    assert "| eIP | 2.00 / 1.50 → 1.33 |" in text  # shift response: σ ratio / error ratio vs the first set
    assert "| test_hot | eIP | 0.05 / 0.52 (0.6) | -0.01 / 0.5 (0.55) | 0.81 |" in text  # within element, authors'
    assert "| test_hot | eIP | 1.0000 / 0.9999 | 0.1200 / -0.0500 |" in text  # rotation stability
    assert "| plain PaiNN | 0.1 | 0.15 | 2.00 | — |" in text
    assert "| plain PaiNN | 1.50 | 0.8 | 0.8 |" in text  # side-by-side epoch cost, CPU relative to eIP
    assert "`steps_per_s.md` | 12.50" in text and "10 values, min 0, max 9" in text
    assert "| 0 | 30.00 | 20.00 | 5.00 | 1.00 | 4.00 | 0.133 |" in text
    assert "## `broken.json`" in text and "Unreadable" in text
    assert "unexpected layout" in text  # a malformed known result falls back to raw values
    assert "date not recorded" not in text.split("## explore")[1].split("##")[0]


# ----------------------------------------------------------------------------- novelty candidates
def test_llpr_factor_follows_its_definition_and_is_rotation_invariant(tiny_frames) -> None:
    import novelty_candidates as nc
    from scipy.spatial.transform import Rotation

    from eip_al.model.evaluation import predict_graphs
    from tests.model_fixtures import tiny_model

    model = tiny_model(seed=1)
    llpr = nc.LastLayerRigidity(model, tiny_frames[:4])
    train_factor = llpr.factor(frames_to_graphs(tiny_frames[:4], model))
    assert (train_factor >= 1).all()
    # by construction ~REFERENCE_QUANTILE of each element's training atoms are inside the envelope
    species = np.concatenate([a.numbers for a in tiny_frames[:4]])
    for z in np.unique(species):
        inside = np.mean(train_factor[species == z] == 1.0)
        assert inside == pytest.approx(nc.REFERENCE_QUANTILE, abs=2 / np.sum(species == z))
    # the factor of one atom, recomputed by hand from the readout's hidden layer
    f, sp = nc._last_layer(model, frames_to_graphs(tiny_frames[:4], model))
    e = sp[0]
    x = f[sp == e]
    c = x.T @ x / len(x)
    c += nc.RIDGE * np.trace(c) / len(c) * np.eye(len(c))
    r = np.einsum("nh,hk,nk->n", x, np.linalg.inv(c), x)
    assert train_factor[0] == pytest.approx(max(1.0, r[0] / np.quantile(r, nc.REFERENCE_QUANTILE)), rel=1e-9)
    # invariant features: a rigidly rotated frame has the same factors; σ is scaled by √factor
    test = tiny_frames[4]
    rotated = test.copy()
    rot = Rotation.from_euler("xyz", [0.3, -1.1, 2.0])
    rotated.positions = rot.apply(test.positions)
    rotated.cell = rot.apply(np.asarray(test.cell))
    g, g_rot = frames_to_graphs([test], model), frames_to_graphs([rotated], model)
    assert np.allclose(llpr.factor(g), llpr.factor(g_rot), rtol=1e-8)
    (base,), (scaled,) = predict_graphs(model, g), llpr.predict(g)
    assert np.allclose(scaled["uncertainty"], base["uncertainty"] * np.sqrt(llpr.factor(g)))
    assert scaled["config_uncertainty"] == pytest.approx(float(np.mean(scaled["uncertainty"])))
