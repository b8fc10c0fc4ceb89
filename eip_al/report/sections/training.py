"""Training: accuracy and uncertainty on validation, the curves, the calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eip_al.report import figures
from eip_al.report.context import Context
from eip_al.report.render import format_value
from eip_al.schemas import TrainingResult, ValidationMetrics
from eip_al.uq import Calibration


def render(c: Context) -> None:
    c.w.heading("Training")
    tr, problem = c.load("train", TrainingResult)
    if tr is None:
        c.w.note(f"{problem}; no training metrics, no selection audit.")
        return
    c.train = tr
    v = tr.valid
    c.put(n_train=tr.n_train, n_valid=tr.n_valid, epochs_run=tr.epochs_run, best_epoch=tr.best_epoch,
          valid_force_mae=v.force_mae, valid_force_rmse=v.force_rmse,
          valid_energy_mae_per_atom=v.energy_mae_per_atom, valid_sigma_mean=v.sigma_mean,
          valid_sigma_median=v.sigma_median,
          valid_aleatoric_mean=v.aleatoric_mean, valid_spearman_atom=v.spearman_atom,
          valid_roc_auc_atom=v.roc_auc_atom, train_wall_time_s=tr.wall_time_s,
          valid_miscalibration_area=v.miscalibration_area,
          valid_miscalibration_area_calibrated=v.miscalibration_area_calibrated)
    _training_calibration(c, tr)
    _tail_findings(c, v)
    c.w.text(f"Trained on {tr.n_train} frames ({tr.n_valid} validation) for {tr.epochs_run} epochs "
             f"on {tr.device}; best epoch {tr.best_epoch}, stopped by {tr.stopped_reason}"
             + (f", warm-started from `{tr.warm_started_from}`." if tr.warm_started_from else "."))
    rows = [
        ("n_train", tr.n_train), ("n_valid", tr.n_valid), ("epochs_run", tr.epochs_run),
        ("best_epoch", tr.best_epoch), ("wall_time_s", tr.wall_time_s),
        *((f"valid_{k}", val) for k, val in v.model_dump().items()),
    ]
    c.w.table(pd.DataFrame(rows, columns=["metric", "value"]), "training")
    path = c.run.abs(tr.metrics_csv)
    try:
        curves = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        c.w.note(f"per-epoch metrics `{tr.metrics_csv}` unreadable ({type(exc).__name__}); no curves.")
        return
    if "epoch" not in curves.columns:
        curves.insert(0, "epoch", np.arange(len(curves)))
    known = ["epoch"] + [p[0] for p in figures.TRAINING_PANELS if p[0] in curves.columns]
    curves = curves[known]
    for col in known[1:]:
        curves[col] = pd.to_numeric(curves[col], errors="coerce")
    if len(known) == 1 or curves.empty:
        c.w.note(f"`{tr.metrics_csv}` has no known metric columns; no curves.")
        return
    c.w.figure(figures.training_curves(curves, tr.best_epoch), "training_curves",
               "Training curves (dashed: best epoch).")
    c.w.table(curves, "training_curves", shown=False)


HEAVY_TAIL_RATIO = 3.0  # validation σ mean / median above this: a few extrapolating atoms dominate
RMSE_MAE_LIMIT = 2.5  # force RMSE / MAE above this: heavy-tailed errors (≈ 1.1–1.3 for well-behaved ones)


def _tail_findings(c: Context, v: ValidationMetrics) -> None:
    """Warn when a few huge σ or errors make the means meaningless (robust statistics apply)."""
    if v.sigma_median and v.sigma_mean / v.sigma_median > HEAVY_TAIL_RATIO:
        c.findings.append(f"validation σ is heavy-tailed: mean {v.sigma_mean:.3g} vs median {v.sigma_median:.3g} "
                          "eV/Å (a few extrapolating atoms; trust the median and the calibration, not the mean)")
    if v.force_mae > 0 and v.force_rmse / v.force_mae > RMSE_MAE_LIMIT:
        c.findings.append(f"validation force errors are heavy-tailed: RMSE/MAE = {v.force_rmse / v.force_mae:.2g} "
                          "(some validation frames are far outside what the model learned)")


def _training_calibration(c: Context, tr: TrainingResult) -> None:
    """The σ → expected-error map fitted after training (docs/calibration.md), if any."""
    if tr.calibration is None:
        c.w.text("No uncertainty calibration was fitted (validation split too small or an older model): "
                 "σ is shown on its raw scale only.")
        return
    try:
        cal = Calibration.model_validate_json(c.run.abs(tr.calibration).read_text())
    except (OSError, ValueError) as exc:
        c.w.note(f"calibration `{tr.calibration}` unreadable ({type(exc).__name__}); raw σ only.")
        return
    c.calibration = cal
    c.put(calibration_method=cal.method, calibration_scale=cal.scale, calibration_n_samples=cal.n_samples)
    c.w.text(f"Calibration ({cal.method}, fitted on {cal.n_samples} validation atoms, σ "
             f"{cal.sigma_range[0]:.3g}–{cal.sigma_range[1]:.3g} eV/Å): expected per-atom force error "
             f"= map(σ_i); mean error / mean σ = {cal.scale:.3g}. "
             f"Miscalibration area on validation: raw σ {format_value(tr.valid.miscalibration_area)}, "
             f"calibrated {format_value(tr.valid.miscalibration_area_calibrated)} eV/Å (in-sample).")
