"""Uncertainty quantification, pure numpy: σ → expected force error, calibration curves,
the one σ-vs-error scoring function, label-noise flags.

Definitions (docs/calibration.md, docs/eip-method §3–§4):

* error of atom i: ‖F_pred,i − F_ref,i‖₂ (`metrics.atom_force_error`); its uncertainty σ_i
  is the per-atom epistemic σ. Per configuration: mean_i of each.
* `Calibration.apply(σ_i)` is the expected per-atom force error E[‖ΔF_i‖ | σ_i] in eV/Å,
  fitted on validation data by isotonic regression (monotone, no shape assumed) or, when
  there are too few samples, by a single scale factor (mean error over mean σ).
  The calibrated configuration uncertainty is mean_i apply(σ_i): the expected mean
  per-atom force error of the frame, the same quantity the stop rule measures.
* calibration curve: equal-count bins of a predicted error (σ or its calibrated value),
  mean realized error per bin; miscalibration area: the count-weighted mean |gap| between
  that curve and the diagonal (eV/Å; 0 = every bin's mean error equals its prediction).
* `sigma_error_scores`: every σ-vs-error number (Spearman, ROC-AUC, miscalibration area)
  that validation, the selection audit and the report show, computed here only.

No model, no run directory: everything above this layer (model, select, audit, report)
may import it; it imports only `atomic`, `metrics` and `schemas`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ase import Atoms
from pydantic import Field, model_validator
from scipy.optimize import isotonic_regression

from eip_al.atomic import atomic_write_text
from eip_al.metrics import uq_metrics
from eip_al.schemas import Strict, ValidationMetrics

# E‖x‖ / sqrt(E‖x‖²) for an isotropic 3-D Gaussian x (mean of a Maxwell distribution
# over its RMS): the expected error norm of Gaussian errors with RMS c·σ is KAPPA·c·σ.
KAPPA = math.sqrt(8.0 / (3.0 * math.pi))
MIN_ISOTONIC_SAMPLES = 200  # fewer (σ, error) pairs than this: fit a scale factor instead
MIN_SCALE_SAMPLES = 3
ISOTONIC_BINS = 50  # at most this many equal-count bins (knots) for the isotonic map
MIN_PER_BIN = 5

class CalibrationError(ValueError):
    """Calibration cannot be fitted or used (too few or invalid samples, bad stored map)."""


# ============================================================================ the map
class Calibration(Strict):
    """A monotone map from per-atom σ (eV/Å) to expected per-atom force error (eV/Å).

    method "scale": apply(σ) = scale·σ (scale = Σ error / Σ σ on the fitted atoms).
    method "isotonic": linear interpolation between knots (σ_k, e_k), e non-decreasing;
    below the first knot the map is flat (e_0: the data say nothing about smaller σ, the
    lowest observed mean error is kept); above the last knot it is proportional,
    e_last·σ/σ_last (error grows with σ at the ratio of the top bin), so σ far beyond
    the fitted range still maps to larger expected errors.
    `scale` is always fitted on the same data (for the scale method it is the map).
    """

    method: Literal["isotonic", "scale"]
    scale: float = Field(gt=0)
    knots_sigma: list[float] = Field(default_factory=list)
    knots_error: list[float] = Field(default_factory=list)
    n_samples: int
    sigma_range: tuple[float, float]
    fitted_on: str = "validation"

    @model_validator(mode="after")
    def _valid_knots(self) -> Calibration:
        ks, ke = np.asarray(self.knots_sigma), np.asarray(self.knots_error)
        if self.method == "isotonic":
            if ks.size < 2 or ks.size != ke.size:
                raise ValueError("isotonic calibration needs >= 2 knots, as many σ as errors")
            if np.any(np.diff(ks) <= 0) or np.any(np.diff(ke) < 0) or ks[0] <= 0 or ke[-1] <= 0:
                raise ValueError("isotonic knots need increasing σ > 0 and non-decreasing errors")
        return self

    def apply(self, sigma: np.ndarray | float) -> np.ndarray:
        """Expected per-atom force error (eV/Å) for σ (any shape); NaN stays NaN."""
        s = np.asarray(sigma, dtype=np.float64)
        if self.method == "scale":
            return self.scale * s
        ks, ke = np.asarray(self.knots_sigma), np.asarray(self.knots_error)
        out = np.interp(s, ks, ke)  # flat below the first knot
        above = s > ks[-1]
        out = np.where(above, ke[-1] * s / ks[-1], out)
        return np.where(np.isnan(s), np.nan, out)

    def inverse(self, error: np.ndarray | float) -> np.ndarray:
        """Smallest σ whose expected error reaches `error` (0 where the flat start already does)."""
        e0 = np.asarray(error, dtype=np.float64)
        if self.method == "scale":
            return e0 / self.scale
        e = np.atleast_1d(e0)
        ks, ke = np.asarray(self.knots_sigma), np.asarray(self.knots_error)
        out = np.empty_like(e)
        flat = e <= ke[0]
        tail = e > ke[-1]
        mid = ~flat & ~tail
        out[flat] = 0.0
        out[tail] = e[tail] * ks[-1] / ke[-1]
        if np.any(mid):
            # first knot index j with ke[j] >= e, interpolate on segment (j-1, j)
            j = np.searchsorted(ke, e[mid], side="left")
            lo, hi, s0, s1 = ke[j - 1], ke[j], ks[j - 1], ks[j]
            out[mid] = s0 + (e[mid] - lo) * (s1 - s0) / (hi - lo)
        return out.reshape(e0.shape)

    def save(self, path: Path) -> Path:
        atomic_write_text(Path(path), self.model_dump_json(indent=2) + "\n")
        return Path(path)

    @classmethod
    def from_dict(cls, data: Any, where: str = "calibration") -> Calibration:
        try:
            return cls.model_validate(data)
        except Exception as exc:  # pydantic.ValidationError or CalibrationError
            raise CalibrationError(f"{where}: invalid calibration: {exc}") from None


def _clean_pairs(sigma: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, e = np.ravel(np.asarray(sigma, float)), np.ravel(np.asarray(error, float))
    if s.shape != e.shape:
        raise CalibrationError(f"σ and error must have the same size (got {s.size} and {e.size})")
    ok = np.isfinite(s) & np.isfinite(e) & (s > 0) & (e >= 0)
    return s[ok], e[ok]


def fit_scale(sigma: np.ndarray, error: np.ndarray) -> float:
    """Factor s of E[‖ΔF_i‖ | σ_i] = s·σ_i: the moment estimate s = Σ‖ΔF_i‖ / Σσ_i.

    It makes the mean predicted error equal the mean realized error, for any error
    distribution with E[error | σ] ∝ σ. For Gaussian errors ΔF_i ~ N(0, c²σ_i²/3 · I₃) it
    converges to the likelihood answer κ·c (κ = sqrt(8/(3π)), the mean norm of such a
    vector over its RMS); unlike the Gaussian maximum-likelihood c² = mean(‖ΔF‖²/σ²) it is
    not inflated by heavy-tailed errors (a few atoms with small σ and large errors). Atoms
    whose σ is an outlier (`_sigma_inliers`) are left out, so a few extrapolating atoms with
    σ ~ 10⁴ eV/Å cannot set the scale for all others.
    """
    s, e = _clean_pairs(sigma, error)
    if s.size < MIN_SCALE_SAMPLES:
        raise CalibrationError(f"need at least {MIN_SCALE_SAMPLES} finite (σ > 0, error) pairs, got {s.size}")
    keep = _sigma_inliers(s)
    scale = float(e[keep].sum() / s[keep].sum())
    if not scale > 0:
        raise CalibrationError("all errors are zero: nothing to calibrate against")
    return scale


SIGMA_OUTLIER_MADS = 5.0  # σ beyond this many robust SDs above the median of log σ is an outlier


def _sigma_inliers(s: np.ndarray) -> np.ndarray:
    """Mask of σ that are not far-upper outliers on a log scale (median + 5 × 1.4826 MAD of log σ)."""
    log_s = np.log(s)
    med = np.median(log_s)
    mad = 1.4826 * np.median(np.abs(log_s - med))
    if mad == 0:
        return np.ones(s.size, dtype=bool)
    return log_s <= med + SIGMA_OUTLIER_MADS * mad


def _equal_count_bins(
    x: np.ndarray, y: np.ndarray, n_bins: int, x_stat: Literal["mean", "median"] = "mean"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    groups = np.array_split(order, max(1, min(n_bins, x.size)))
    groups = [g for g in groups if g.size]
    locate = np.median if x_stat == "median" else np.mean
    return (
        np.array([locate(x[g]) for g in groups]),
        np.array([y[g].mean() for g in groups]),
        np.array([g.size for g in groups]),
    )


def fit_calibration(
    sigma_atom: np.ndarray,
    error_atom: np.ndarray,
    method: Literal["isotonic", "scale"] = "isotonic",
    fitted_on: str = "validation",
) -> Calibration:
    """Fit the σ → expected-error map on per-atom (σ_i, ‖ΔF_i‖) pairs.

    Non-finite pairs and σ ≤ 0 are dropped. Isotonic falls back to the scale factor when
    fewer than MIN_ISOTONIC_SAMPLES pairs remain, when σ has no spread, or when the fit
    has fewer than two distinct levels. Raises CalibrationError with < 3 usable pairs.
    """
    s, e = _clean_pairs(sigma_atom, error_atom)
    scale = fit_scale(s, e)
    common = {"scale": scale, "n_samples": int(s.size), "sigma_range": (float(s.min()), float(s.max())),
              "fitted_on": fitted_on}
    if method == "scale" or s.size < MIN_ISOTONIC_SAMPLES or np.ptp(s) == 0:
        return Calibration(method="scale", **common)
    n_bins = min(ISOTONIC_BINS, s.size // MIN_PER_BIN)
    bx, by, bn = _equal_count_bins(s, e, n_bins, x_stat="median")  # a huge σ cannot move a knot
    # merge bins with equal mean σ (many tied σ values) so knots are strictly increasing
    ux, inv = np.unique(bx, return_inverse=True)
    wn = np.bincount(inv, weights=bn)
    wy = np.bincount(inv, weights=by * bn) / wn
    fitted = isotonic_regression(wy, weights=wn, increasing=True).x
    if ux.size < 2 or fitted[-1] <= 0 or np.ptp(fitted) == 0:
        return Calibration(method="scale", **common)
    return Calibration(method="isotonic", knots_sigma=ux.tolist(), knots_error=fitted.tolist(), **common)


# ============================================================================ diagnostics
def calibration_curve(
    predicted: np.ndarray, error: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-count bins of `predicted` (σ or expected error): (mean predicted, mean error, counts).

    Non-finite pairs are dropped; fewer samples than bins give one sample per bin.
    """
    p, e = np.ravel(np.asarray(predicted, float)), np.ravel(np.asarray(error, float))
    if p.shape != e.shape:
        raise ValueError(f"predicted and error must have the same size (got {p.size} and {e.size})")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    ok = np.isfinite(p) & np.isfinite(e)
    if not ok.any():
        return np.empty(0), np.empty(0), np.empty(0, dtype=int)
    return _equal_count_bins(p[ok], e[ok], n_bins)


def miscalibration_area(bin_predicted: np.ndarray, bin_error: np.ndarray, counts: np.ndarray) -> float | None:
    """Count-weighted mean |mean error − prediction| over the bins of a calibration curve (eV/Å)."""
    w = np.asarray(counts, float)
    if w.size == 0 or w.sum() == 0:
        return None
    gap = np.abs(np.asarray(bin_error, float) - np.asarray(bin_predicted, float))
    return float(np.sum(w * gap) / w.sum())


def sigma_error_scores(
    sigma_atom: np.ndarray,
    err_atom: np.ndarray,
    sigma_config: np.ndarray | None = None,
    err_config: np.ndarray | None = None,
    calibrated_atom: np.ndarray | None = None,
    n_bins: int = 10,
) -> dict[str, float | None]:
    """Did σ rank and size the errors? The one σ-vs-error scoring of validation, audit and report.

    Spearman and ROC-AUC (eip_al.metrics, top 20 % errors are bad) per atom and, given the
    per-configuration arrays, per configuration; the miscalibration area of raw σ and, given
    the calibrated expected error per atom (non-empty), of that.
    """
    atom = uq_metrics(sigma_atom, err_atom)
    out: dict[str, float | None] = {"spearman_atom": atom["spearman"], "roc_auc_atom": atom["roc_auc"],
                                    "spearman_config": None, "roc_auc_config": None}
    if sigma_config is not None and err_config is not None:
        conf = uq_metrics(sigma_config, err_config)
        out.update(spearman_config=conf["spearman"], roc_auc_config=conf["roc_auc"])
    out["miscalibration_area"] = miscalibration_area(*calibration_curve(sigma_atom, err_atom, n_bins))
    out["miscalibration_area_calibrated"] = (
        miscalibration_area(*calibration_curve(calibrated_atom, err_atom, n_bins))
        if calibrated_atom is not None and np.size(calibrated_atom) else None
    )
    return out


# ============================================================================ label noise
@dataclass(frozen=True)
class NoiseThresholds:
    """The label-noise rule of one model: flagged ⇔ aleatoric ≥ aleatoric_min and
    epistemic ≤ max_epistemic_ratio × aleatoric (per configuration)."""

    aleatoric_min: float  # eV/Å
    max_epistemic_ratio: float  # epistemic/aleatoric, absolute


def noise_thresholds(valid: ValidationMetrics, aleatoric_factor: float | None, epistemic_ratio: float) -> NoiseThresholds | None:
    """The label-noise rule, relative to a model's validation metrics (None: flags off).

    aleatoric_min = aleatoric_factor × the validation median per-atom aleatoric σ (a
    median: a few extrapolating atoms can lift a mean by orders of magnitude);
    max_epistemic_ratio = epistemic_ratio × the 90th percentile of the validation atoms'
    epistemic/aleatoric σ: a frame is flagged when its noise estimate is high while its
    epistemic share stays within the range seen on data the model was trained on. Not an
    absolute epistemic ≤ aleatoric: the evidential regulariser lowers ν where labels are
    noisy, so that never holds there. Artifacts without the robust statistics fall back to
    means. docs/calibration.md
    """
    aleatoric = valid.aleatoric_median if valid.aleatoric_median is not None else valid.aleatoric_mean
    share = (valid.epistemic_share_p90 if valid.epistemic_share_p90 is not None
             else valid.sigma_mean / valid.aleatoric_mean if valid.aleatoric_mean > 0 else math.nan)
    if aleatoric_factor is None or not aleatoric > 0 or not share > 0:
        return None
    return NoiseThresholds(aleatoric_min=aleatoric_factor * aleatoric, max_epistemic_ratio=epistemic_ratio * share)


def label_noise_flags(
    aleatoric: np.ndarray,
    epistemic: np.ndarray,
    aleatoric_min: float,
    max_epistemic_ratio: float = 1.0,
) -> np.ndarray:
    """Frames whose uncertainty looks like label noise: more data will not help there.

    Per configuration (mean per-atom σ of each kind): flagged when the aleatoric σ is at
    least `aleatoric_min` (eV/Å) AND the epistemic σ is at most `max_epistemic_ratio` ×
    the aleatoric σ (`noise_thresholds` derives both from a model's validation metrics).
    NaN (no aleatoric output) is never flagged.
    """
    a, e = np.asarray(aleatoric, float), np.asarray(epistemic, float)
    if a.shape != e.shape:
        raise ValueError(f"aleatoric and epistemic must have the same shape ({a.shape} vs {e.shape})")
    if not aleatoric_min > 0 or not max_epistemic_ratio > 0:
        raise ValueError("aleatoric_min and max_epistemic_ratio must be > 0")
    with np.errstate(invalid="ignore"):
        return np.isfinite(a) & np.isfinite(e) & (a >= aleatoric_min) & (e <= max_epistemic_ratio * a)


def frame_aleatoric(atoms: Atoms) -> float:
    """Mean per-atom aleatoric σ ‖aleatoric_components_i‖ of a frame (NaN if it has none)."""
    comps = atoms.arrays.get("aleatoric_components")
    if comps is None:
        return math.nan
    return float(np.mean(np.linalg.norm(np.asarray(comps, float).reshape(len(atoms), 3), axis=1)))


def calibration_from_meta(meta: dict[str, Any], where: str) -> Calibration | None:
    """The calibration stored in a checkpoint's `extra` metadata (None if it has none)."""
    data = (meta.get("extra") or {}).get("calibration")
    return None if data is None else Calibration.from_dict(data, where)
