"""Calibrated uncertainty: the σ → expected-error map, audits, label-noise flags, stop rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eip_al import audit, stop, uq
from eip_al.calculator import EIPCalculator
from eip_al.config import ALConfig, LabelerConfig, MockLabelerConfig, ModelConfig, TrainConfig
from eip_al.io import read_frames, write_frames
from eip_al.label import label_file
from eip_al.model import save_checkpoint
from eip_al.model.checkpoint import read_payload
from eip_al.pipeline import stop_reason
from eip_al.rundir import RunDirError
from eip_al.schemas import GenerationRecord, SelectionAudit, TrainingResult, ValidationMetrics
from eip_al.select import R, SelectionRules, select_generation, select_pool
from eip_al.stop import GenerationSignal, stop_rule
from eip_al.train import train_model
from eip_al.uq import (
    KAPPA,
    Calibration,
    CalibrationError,
    calibration_curve,
    fit_calibration,
    label_noise_flags,
    miscalibration_area,
    sigma_error_scores,
)
from tests.model_fixtures import (
    TINY,
    distorted_water_frames,
    labelled_water_frames,
    tiny_model,
    torch_threads,
    water_box,
)
from tests.synthetic_run import build_synthetic_run, synthetic_predictor
from tests.test_select import make_frame, write_run


def _maxwell_errors(rng: np.random.Generator, rms: np.ndarray) -> np.ndarray:
    """‖x‖ of isotropic 3-D Gaussian vectors with E‖x‖² = rms² (per sample)."""
    return np.linalg.norm(rng.normal(size=(rms.size, 3)) * (rms / math.sqrt(3))[:, None], axis=1)


# ----------------------------------------------------------------------------- the map
def test_isotonic_recovers_a_known_monotone_relation() -> None:
    rng = np.random.default_rng(0)
    sigma = np.exp(rng.uniform(np.log(0.02), np.log(1.0), 20000))

    def truth(s):
        return 0.3 * s + 0.5 * s**2  # E[error | σ], not proportional to σ

    error = truth(sigma) * rng.gamma(4.0, 0.25, sigma.size)  # noise with mean 1
    cal = fit_calibration(sigma, error)
    assert cal.method == "isotonic" and 2 <= len(cal.knots_sigma) <= uq.ISOTONIC_BINS
    grid = np.geomspace(0.04, 0.7, 15)
    np.testing.assert_allclose(cal.apply(grid), truth(grid), rtol=0.08)
    assert np.all(np.diff(cal.apply(np.geomspace(1e-4, 100, 500))) >= 0)  # monotone everywhere
    again = Calibration.model_validate_json(cal.model_dump_json())  # JSON round trip
    np.testing.assert_array_equal(again.apply(grid), cal.apply(grid))


def test_scale_recovers_the_expected_error_factor_and_small_data_falls_back() -> None:
    rng = np.random.default_rng(1)
    sigma = rng.uniform(0.05, 0.5, 5000)
    c = 1.7  # the force error's RMS is 1.7 σ
    error = _maxwell_errors(rng, c * sigma)
    cal = fit_calibration(sigma, error, method="scale")
    assert cal.method == "scale" and cal.scale == pytest.approx(KAPPA * c, rel=0.03)
    assert np.mean(error) == pytest.approx(np.mean(cal.apply(sigma)), rel=0.03)  # expected error
    few = fit_calibration(sigma[:50], error[:50])  # fewer than MIN_ISOTONIC_SAMPLES
    assert few.method == "scale" and few.scale == pytest.approx(KAPPA * c, rel=0.25)
    heavy = sigma * rng.lognormal(0.0, 0.8, sigma.size)  # E[error | σ] = exp(0.32) σ, heavy tail
    assert fit_calibration(sigma, heavy, method="scale").scale == pytest.approx(math.exp(0.32), rel=0.05)
    assert fit_calibration(np.full(500, 0.2), error[:500]).method == "scale"  # no σ spread
    with pytest.raises(CalibrationError, match="at least 3"):
        fit_calibration([0.1, np.nan, -1.0], [0.1, 0.2, 0.3])
    with pytest.raises(CalibrationError, match="same size"):
        fit_calibration([0.1, 0.2], [0.1])


@pytest.mark.parametrize("method", ["scale", "isotonic"])
def test_a_few_huge_sigma_do_not_ruin_the_calibration(method: str) -> None:
    """1 % of atoms with σ ~ 10⁴ eV/Å (extrapolation) and ordinary errors: the map for the
    other 99 % is what it is without them (the sum-based scale alone would drop ~100×)."""
    rng = np.random.default_rng(4)
    sigma = rng.uniform(0.05, 0.5, 5000)
    error = _maxwell_errors(rng, 1.7 * sigma)
    clean = fit_calibration(sigma, error, method=method)
    tail = sigma.copy()
    tail[rng.choice(sigma.size, 50, replace=False)] = rng.uniform(5e3, 5e4, 50)
    dirty = fit_calibration(tail, error, method=method)
    grid = np.linspace(0.08, 0.45, 10)
    np.testing.assert_allclose(dirty.apply(grid), clean.apply(grid), rtol=0.1)
    assert dirty.scale == pytest.approx(clean.scale, rel=0.05)


def test_extrapolation_and_inverse() -> None:
    cal = Calibration(method="isotonic", scale=1.0, knots_sigma=[0.1, 0.2, 0.4], knots_error=[0.05, 0.05, 0.2],
                      n_samples=300, sigma_range=(0.1, 0.4))
    np.testing.assert_allclose(cal.apply([0.01, 0.1, 0.15, 0.3, 0.4, 0.8]), [0.05, 0.05, 0.05, 0.125, 0.2, 0.4])
    # inverse: smallest σ reaching the error (flat start → 0; tail proportional)
    np.testing.assert_allclose(cal.inverse([0.02, 0.125, 0.4]), [0.0, 0.3, 0.8])
    assert float(cal.inverse(0.125)) == pytest.approx(0.3)
    assert np.isnan(cal.apply(np.nan))
    with pytest.raises(CalibrationError, match="increasing"):
        Calibration.from_dict({**cal.model_dump(), "knots_error": [0.3, 0.2, 0.1]}, "x.json")


# ----------------------------------------------------------------------------- audit
def test_perfect_ranking_gives_one_and_shuffled_gives_a_half() -> None:
    rng = np.random.default_rng(2)
    err = rng.lognormal(-2.0, 0.8, 20000)
    cfg_err = err.reshape(-1, 20).mean(axis=1)
    perfect = sigma_error_scores(err, err, cfg_err, cfg_err)
    assert perfect["spearman_atom"] == pytest.approx(1.0) and perfect["roc_auc_atom"] == pytest.approx(1.0)
    assert perfect["spearman_config"] == pytest.approx(1.0) and perfect["roc_auc_config"] == pytest.approx(1.0)
    assert perfect["miscalibration_area"] == pytest.approx(0.0, abs=1e-12)  # σ = error exactly
    shuffled = sigma_error_scores(rng.permutation(err), err)
    assert abs(shuffled["spearman_atom"]) < 0.03 and shuffled["roc_auc_atom"] == pytest.approx(0.5, abs=0.02)


def test_calibration_curve_and_area_on_a_known_miscalibration() -> None:
    rng = np.random.default_rng(3)
    sigma = rng.uniform(0.1, 1.0, 4000)
    x, y, n = calibration_curve(sigma, 2.0 * sigma, n_bins=8)  # errors twice σ, no noise
    assert n.sum() == 4000 and len(x) == 8 and np.all(np.diff(x) > 0)
    np.testing.assert_allclose(y, 2.0 * x)
    assert miscalibration_area(x, y, n) == pytest.approx(sigma.mean())  # mean |2σ − σ|
    error = _maxwell_errors(rng, 2.0 * sigma)
    cal = fit_calibration(sigma, error)
    out = sigma_error_scores(sigma, error, calibrated_atom=cal.apply(sigma))
    assert out["miscalibration_area_calibrated"] < 0.25 * out["miscalibration_area"]
    assert calibration_curve([np.nan], [1.0])[2].size == 0


# ----------------------------------------------------------------------------- label noise
def test_label_noise_flags_follow_the_documented_rule() -> None:
    ale = np.array([0.50, 0.50, 0.50, 0.05, np.nan, 0.20])
    epi = np.array([0.10, 0.50, 0.60, 0.01, 0.01, 0.20])
    flags = label_noise_flags(ale, epi, aleatoric_min=0.2, max_epistemic_ratio=1.0)
    assert flags.tolist() == [True, True, False, False, False, True]  # ≥ bounds count
    assert label_noise_flags(ale, epi, 0.2, max_epistemic_ratio=0.5).tolist() == [True] + [False] * 5
    with pytest.raises(ValueError, match="same shape"):
        label_noise_flags(ale, epi[:2], 0.2)


def test_noise_thresholds_use_robust_validation_statistics() -> None:
    v = ValidationMetrics(n_frames=2, energy_mae_per_atom=0, force_mae=0, force_rmse=0, sigma_mean=1e4,
                          aleatoric_mean=15.0)  # a few extrapolating atoms dominate the means
    legacy = uq.noise_thresholds(v, 1.5, 1.2)  # artifacts without robust statistics: the means
    assert (legacy.aleatoric_min, legacy.max_epistemic_ratio) == pytest.approx((22.5, 800.0))
    robust = v.model_copy(update={"aleatoric_median": 0.3, "sigma_median": 0.25, "epistemic_share_p90": 1.4})
    rule = uq.noise_thresholds(robust, 1.5, 1.2)
    assert (rule.aleatoric_min, rule.max_epistemic_ratio) == pytest.approx((0.45, 1.68))
    assert uq.noise_thresholds(robust, None, 1.2) is None  # flags off
    assert uq.noise_thresholds(robust.model_copy(update={"aleatoric_median": 0.0}), 1.5, 1.2) is None


def test_select_pool_skips_label_noise_candidates_only() -> None:
    sigma = np.array([0.02, 0.3, 0.4, 0.5, 2.0])
    noise = np.array([True, False, True, False, True])
    d = select_pool(sigma, np.zeros(5, int), np.arange(5) * 100, np.arange(5),
                    SelectionRules(n_select=5, lo=0.05, hi=1.0), label_noise=noise)
    assert d.reason.tolist() == [R["accurate"], R["selected"], R["label_noise"], R["selected"], R["failed_band"]]
    assert d.selected.tolist() == [3, 1]


# ----------------------------------------------------------------------------- stop rule
def _sig(g: int, cand: bool = True, err: float | None = 0.05) -> GenerationSignal:
    return GenerationSignal(g, cand, f"gen {g}", err, 3 if err is not None else 0)


def test_stop_rule_triggers_exactly_when_its_conditions_hold() -> None:
    tol = 0.1
    assert stop_rule([_sig(0), _sig(1)], 2, tol).stop
    assert stop_rule([_sig(0, err=0.5), _sig(1), _sig(2)], 2, tol).stop  # only the last k count
    assert not stop_rule([_sig(1)], 2, tol).stop  # fewer than k generations
    assert not stop_rule([_sig(0), _sig(1, err=0.1)], 2, tol).stop  # not below the tolerance
    assert not stop_rule([_sig(0, err=None), _sig(1)], 2, tol).stop  # nothing labeled: not verified
    assert not stop_rule([_sig(0, cand=False), _sig(1)], 2, tol).stop
    assert not stop_rule([None, _sig(1)], 2, tol).stop  # a missing generation breaks the streak
    d = stop_rule([_sig(0, err=0.099), _sig(1, err=0.02)], 2, tol)
    assert d.stop and d.criterion == "force_error+candidate_fraction" and "0.099" in d.reason
    free = stop_rule([_sig(0, err=None), _sig(1, err=9.0)], 2, None)  # no tolerance: candidates only
    assert free.stop and free.criterion == "candidate_fraction"


def test_stop_decision_on_a_run_directory(tmp_path) -> None:
    syn = build_synthetic_run(tmp_path / "run", generations=2, n_label_fail=0)
    run, cfg = syn.run, syn.cfg
    cfg.selection.converge_candidate_fraction = 1.0  # every generation passes the candidate test
    errors = []
    for g in (0, 1):
        aud = audit.selection_audit(run, g, synthetic_predictor)
        assert isinstance(aud, SelectionAudit) and aud.n_frames > 0
        frames = pd.read_csv(run.abs(aud.frames_csv))
        assert aud.force_error_config_mean == pytest.approx(frames["force_error_config"].mean())
        errors.append(aud.force_error_config_mean)
    calls = []

    def no_model(checkpoint, frames):  # the audits are stored: no prediction needed any more
        calls.append(1)
        return synthetic_predictor(checkpoint, frames)

    cfg.selection.converge_force_error = max(errors) * 1.001
    d = stop.stop_decision(cfg, run, 1, predict=no_model)
    assert d.stop and d.criterion == "force_error+candidate_fraction" and not calls
    cfg.selection.converge_force_error = max(errors) * 0.999
    assert not stop.stop_decision(cfg, run, 1, predict=no_model).stop
    # the pipeline records the criterion (the default predictor is never reached: audits exist)
    cfg.selection.converge_force_error = max(errors) * 1.001
    reason = stop_reason(cfg, run, 1)
    assert reason is not None and reason.startswith("force_error+candidate_fraction:")
    rec = GenerationRecord.load(run.gen_dir(1) / "generation.json")
    assert rec.converged and rec.stop_reason == reason


# ----------------------------------------------------------------------------- selection
def _training(run, tmp_path, calibration: Calibration | None, aleatoric_mean: float = 0.05) -> None:
    ckpt = tmp_path / "model.pt"
    extra = {"calibration": calibration.model_dump(mode="json")} if calibration is not None else {}
    save_checkpoint(ckpt, tiny_model(), extra=extra)
    d = run.step_dir(0, "train")
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.pt").write_bytes(ckpt.read_bytes())
    TrainingResult(
        generation=0, checkpoint=run.rel(d / "model.pt"), metrics_csv="m.csv", dataset="d.extxyz", n_train=1,
        n_valid=1, epochs_run=1, best_epoch=1, stopped_reason="max_epochs", device="cpu", wall_time_s=1.0,
        valid=ValidationMetrics(n_frames=1, energy_mae_per_atom=0, force_mae=0, force_rmse=0, sigma_mean=0.1,
                                aleatoric_mean=aleatoric_mean),
        element_energies={"H": 0.0, "O": 0.0},
    ).write(run.artifact_path(0, "train"))


def test_select_generation_on_the_calibrated_scale_with_noise_flags(tmp_path) -> None:
    sigmas = [0.02, 0.1, 0.2, 0.4, 0.8, 1.6]
    frames = [make_frame(s, "md-300K-0", "md", 100 * s, sig) for s, sig in enumerate(sigmas)]
    noisy = make_frame(50, "md-300K-0", "md", 1000, 0.3)
    noisy.arrays["aleatoric_components"] = np.full((8, 3), 0.6 / math.sqrt(3))  # ‖·‖ = 0.6 per atom
    # the failed-band frame (raw σ 1.6) looks noisy by σ alone; failed frames are never flagged
    frames[-1].arrays["aleatoric_components"] = np.full((8, 3), 1.6 / math.sqrt(3))
    run = write_run(tmp_path, {"md-300K-0": [*frames, noisy]}, [])
    half = Calibration(method="scale", scale=0.5, n_samples=100, sigma_range=(0.01, 2.0))
    cfg = ALConfig()
    cfg.selection.lo, cfg.selection.hi, cfg.selection.min_step_gap = 0.08, 0.5, 0
    cfg.selection.scale = "calibrated"
    with pytest.raises(RunDirError, match="no valid training result"):
        select_generation(cfg, run, 0)
    _training(run, tmp_path, None)
    with pytest.raises(RunDirError, match="no calibration"):
        select_generation(cfg, run, 0)

    _training(run, tmp_path, half)  # expected error = σ/2; label-noise level 1.5 × 0.05 = 0.075 eV/Å
    res = select_generation(cfg, run, 0)
    table = pd.read_csv(run.abs(res.decisions_csv)).set_index("step")
    np.testing.assert_allclose(table["sigma_calibrated"], 0.5 * table["sigma"])
    assert table.loc[[0, 100], "band"].tolist() == ["accurate"] * 2  # 0.01, 0.05 < lo = 0.08
    assert table.loc[[200, 300, 400], "band"].tolist() == ["candidate"] * 3  # raw 0.4 would be one too
    assert table.loc[500, "band"] == "failed"  # 0.8 ≥ hi = 0.5 (raw 1.6)
    assert table["label_noise"].tolist() == [False] * 6 + [True]
    assert table.loc[1000, "reason"] == "label_noise" and res.n_label_noise == 1
    assert res.n_selected == 3 and res.scale == "calibrated"
    assert (res.lo_raw, res.hi_raw) == pytest.approx((0.16, 1.0))
    assert (res.lo_calibrated, res.hi_calibrated) == (0.08, 0.5)
    assert res.noise_aleatoric_min == pytest.approx(0.075)
    assert res.noise_max_epistemic_ratio == pytest.approx(1.2 * 0.1 / 0.05)  # validation means (no p90 here)

    cfg.selection.scale, cfg.selection.noise_aleatoric_factor = "raw", None  # raw bands, flags off
    raw = select_generation(cfg, run, 0)
    table = pd.read_csv(run.abs(raw.decisions_csv)).set_index("step")
    assert table.loc[100, "band"] == "candidate" and table.loc[1000, "reason"] == "selected"
    assert raw.lo_calibrated == pytest.approx(0.04) and raw.n_label_noise == 0


# ----------------------------------------------------------------------------- with a real model
VAPOUR, LIQUID = (8.0, "vapour"), (6.2, "liquid")  # 8 H2O per cubic box of this edge (Å)


def _mock_labels(frames: list, noise: float, work: Path) -> list:
    """Label through the mock labeler (q-SPC/Fw) with its seeded Gaussian force noise."""
    write_frames(work / "in.extxyz", frames)
    cfg = LabelerConfig(kind="mock", mock=MockLabelerConfig(force_noise_eV_A=noise, seed=3))
    result = label_file(work / "in.extxyz", work / "out.extxyz", cfg)
    assert result.n_ok == len(frames)
    return read_frames(work / "out.extxyz")


@pytest.mark.parametrize("noisy_region", [VAPOUR, LIQUID], ids=lambda r: f"noise-on-{r[1]}")
def test_mock_label_noise_raises_aleatoric_sigma_and_gets_flagged(tmp_path, noisy_region) -> None:
    """Gaussian force noise (0.5 eV/Å per component) from the mock labeler on one of two
    regions. Both ways round, so the effect is the noise, not the region's difficulty:
    the noisy region gets ~2× the aleatoric σ and is flagged by the default label-noise
    rule, the clean region and unexplored compressed water are not (docs/calibration.md)."""
    train, valid = [], []
    for (box, name), seed in ((VAPOUR, 1), (LIQUID, 2)):
        (tmp_path / name).mkdir()
        noisy = name == noisy_region[1]
        frames = _mock_labels(distorted_water_frames(11 if noisy else 20, seed, box=box), 0.5 if noisy else 0.0, tmp_path / name)
        n_valid = 1 if noisy else 4  # noise in a minority of the validation frames, as in a real run
        train, valid = train + frames[:-n_valid], valid + frames[-n_valid:]
    with torch_threads(1):
        out = train_model(train, valid, ModelConfig(**TINY),
                          TrainConfig(epochs=300, batch_size=4, lr=5e-3, lr_patience=40, early_stopping_patience=300,
                                      device="cpu", seed=1), tmp_path / "t", progress=False)
        calc = EIPCalculator(out.checkpoint, "cpu")

        def per_frame(frames):
            preds = calc.predict_frames(frames)
            return (np.array([np.linalg.norm(p["aleatoric_components"], axis=1).mean() for p in preds]),
                    np.array([np.linalg.norm(p["uncertainty_components"], axis=1).mean() for p in preds]))

        clean_box = LIQUID[0] if noisy_region is VAPOUR else VAPOUR[0]
        a_noisy, e_noisy = per_frame(distorted_water_frames(16, 11, box=noisy_region[0]))
        a_clean, e_clean = per_frame(distorted_water_frames(16, 12, box=clean_box))
        a_far, e_far = per_frame(distorted_water_frames(16, 13, box=5.4))  # compressed: never seen, not noisy
    assert a_noisy.mean() > 1.5 * a_clean.mean(), (a_noisy.mean(), a_clean.mean())

    defaults = ALConfig().selection
    rule = uq.noise_thresholds(out.valid, defaults.noise_aleatoric_factor, defaults.noise_max_epistemic_ratio)
    assert rule is not None

    def flagged(a, e):
        return label_noise_flags(a, e, rule.aleatoric_min, rule.max_epistemic_ratio).mean()

    assert flagged(a_noisy, e_noisy) >= 0.5, (flagged(a_noisy, e_noisy), rule, a_noisy, e_noisy)
    assert flagged(a_clean, e_clean) <= 0.1
    assert flagged(a_far, e_far) <= 0.2, (a_far, e_far, rule)
    # the absolute rule (epistemic ≤ aleatoric) the evidential regulariser defeats: ν < 1 there
    assert np.mean(e_noisy > a_noisy) > 0.5


def test_training_stores_a_calibration_the_calculator_applies(tmp_path) -> None:
    frames = labelled_water_frames(12, seed=1)
    with torch_threads(1):
        out = train_model(frames[:-2], frames[-2:], ModelConfig(**TINY),
                          TrainConfig(epochs=5, batch_size=4, lr=5e-3, device="cpu", seed=1), tmp_path / "t",
                          progress=False)
        calc = EIPCalculator(out.checkpoint, "cpu")
        stored = read_payload(out.checkpoint)["extra"]["calibration"]
        assert json.loads(out.calibration.read_text()) == json.loads(json.dumps(stored))
        cal = Calibration.from_dict(stored)
        assert cal.method == "scale" and cal.n_samples == 48  # 2 validation frames × 24 atoms
        atoms = water_box(8, 6.2, seed=5)
        atoms.calc = calc
        np.testing.assert_allclose(atoms.calc.get_property("calibrated_uncertainty", atoms),
                                   cal.apply(atoms.calc.get_property("uncertainty", atoms)))
        assert atoms.calc.results["config_calibrated_uncertainty"] == pytest.approx(
            float(np.mean(atoms.calc.results["calibrated_uncertainty"])))
    assert out.valid.miscalibration_area is not None and out.valid.miscalibration_area_calibrated is not None


# ----------------------------------------------------------------------------- report
def test_report_shows_both_scales_calibration_curves_and_the_stop_criterion(tmp_path) -> None:
    from eip_al.report import report_generation

    syn = build_synthetic_run(tmp_path / "run", generations=2, n_label_fail=0)
    run, cfg = syn.run, syn.cfg
    cal = Calibration(method="scale", scale=0.8, n_samples=100, sigma_range=(0.01, 2.0))
    for g in (0, 1):  # give both generations' models a calibration
        path = run.step_dir(g, "train") / "calibration.json"
        cal.save(path)
        tr = TrainingResult.load(run.artifact_path(g, "train"))
        tr.model_copy(update={"calibration": run.rel(path)}).write(run.artifact_path(g, "train"))
    cfg.selection.converge_candidate_fraction = 1.0
    cfg.selection.converge_force_error = 100.0  # any realized error passes
    one = cfg.model_copy(update={"generations": 1})  # gen 0 is the last; 1 of k = 2 generations only
    rep0 = report_generation(one, run, 0, predict=synthetic_predictor)
    assert rep0.numbers["stop"] == 0 and rep0.numbers["stop_criterion"] == "max_generations"
    rep = report_generation(cfg, run, 1, predict=synthetic_predictor)
    n = rep.numbers
    assert n["stop"] == 1 and n["stop_criterion"] == "force_error+candidate_fraction"
    aud = SelectionAudit.load(run.gen_dir(1) / "audit" / "artifact.json")  # eip_al.audit, for the stop rule
    assert n["fresh_force_error"] == pytest.approx(aud.force_error_config_mean)
    assert n["calibration_method"] == "scale" and n["lo_calibrated"] is None  # select ran without it
    assert n["audit_miscalibration_area"] is not None and n["audit_miscalibration_area_calibrated"] is not None
    md = run.abs(rep.report_md).read_text()
    assert "## Convergence" in md and "criterion `force_error+candidate_fraction`" in md
    assert any(f.endswith("calibration.png") for f in rep.figures)
    cfg.selection.converge_force_error = 1e-6  # no realized error passes
    assert not stop.stop_decision(cfg, run, 1, predict=None).stop
