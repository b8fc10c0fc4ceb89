"""Uncertainty-quality and accuracy metrics (docs/eip-method §4), numpy only.

Used by training (validation), evaluation, reports, calibration and benchmarks so that
every number with the same name is computed by the same code.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata, spearmanr


def spearman(score: np.ndarray, error: np.ndarray) -> float | None:
    """Spearman rank correlation between an uncertainty score and an error (None if undefined)."""
    score, error = np.ravel(score), np.ravel(error)
    if score.size < 3 or np.ptp(score) == 0 or np.ptp(error) == 0:
        return None
    return float(spearmanr(score, error).statistic)


def roc_auc(score: np.ndarray, is_bad: np.ndarray) -> float | None:
    """ROC-AUC of `score` ranking `is_bad` items first (Mann-Whitney U, ties averaged)."""
    score, is_bad = np.ravel(score), np.ravel(is_bad).astype(bool)
    n_pos, n_neg = int(is_bad.sum()), int((~is_bad).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[is_bad].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bad_by_quantile(error: np.ndarray, quantile: float = 0.8) -> np.ndarray:
    """Items whose error is above the `quantile` of errors (the paper: top 20 % are 'bad')."""
    error = np.ravel(error)
    return error > np.quantile(error, quantile)


def uq_metrics(sigma: np.ndarray, error: np.ndarray, quantile: float = 0.8) -> dict[str, float | None]:
    """Spearman and ROC-AUC of `sigma` against `error` (same shapes)."""
    return {
        "spearman": spearman(sigma, error),
        "roc_auc": roc_auc(sigma, bad_by_quantile(error, quantile)),
    }


def force_errors(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Per-component force MAE and RMSE (eV/Å)."""
    diff = np.asarray(pred) - np.asarray(ref)
    return {"force_mae": float(np.mean(np.abs(diff))), "force_rmse": float(np.sqrt(np.mean(diff**2)))}


def atom_force_error(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-atom force error ‖F_pred,i − F_ref,i‖₂ (what σ_i is compared with)."""
    return np.linalg.norm(np.asarray(pred) - np.asarray(ref), axis=-1)
