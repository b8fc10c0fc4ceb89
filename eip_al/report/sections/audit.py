"""The audit: this generation's model on its new labels and the fixed test split."""

from __future__ import annotations

import pandas as pd
from ase import Atoms

from eip_al.audit import AuditData, audit_arrays, audit_metrics, validated_predictions
from eip_al.report import figures
from eip_al.report.context import Context
from eip_al.report.render import format_value
from eip_al.rundir import RunDirError, load_valid
from eip_al.schemas import DatasetManifest
from eip_al.uq import calibration_curve


def _fixed_test_frames(c: Context) -> tuple[list[Atoms], str | None]:
    """The seed dataset's test split: the same frames for every generation."""
    seed = load_valid(c.run.seed_dir / "artifact.json", DatasetManifest)
    if seed is None:
        return [], "no valid seed dataset manifest"
    frames, problem = c.frames(seed.dataset_extxyz, labels=True)
    if problem:
        return [], problem
    test = [a for a in frames if a.info.get("split") == "test"]
    return test, None if test else "the seed dataset has no frames with split = test"


def _validation_frames(c: Context) -> list[Atoms]:
    """The validation split this generation's model trained with (its calibration's data)."""
    try:
        rel = c.run.dataset_for(c.gen).dataset_extxyz
    except RunDirError:
        return []
    frames, _ = c.frames(rel, labels=True)
    return [a for a in frames if a.info.get("split") == "valid"]


def render(c: Context) -> None:
    c.w.heading("Selection audit: did high σ mean high error?")
    if not c.cfg.report.audit:
        c.w.note("the audit is switched off (`report.audit: false`).")
        return
    if c.predict is None:
        c.w.note("no predictor was given; audit skipped.")
        return
    if c.train is None:
        c.w.note("no model for this generation (train step missing); audit skipped.")
        return
    checkpoint = c.run.abs(c.train.checkpoint)
    sets: dict[str, list[Atoms]] = {}
    if c.labeling is None:
        c.w.note("no labels for this generation; audit on new labels skipped.")
    elif not c.labeling.n_ok:
        c.w.note("no frame was labeled successfully in this generation; audit on new labels skipped.")
    else:
        frames, problem = c.frames(c.labeling.labeled_extxyz, labels=True)
        if problem or not frames:
            c.w.note(f"labeled frames unusable: {problem or 'file is empty'}; audit on new labels skipped.")
        else:
            sets["new_labels"] = frames
    test, problem = _fixed_test_frames(c)
    if test:
        sets["fixed_test"] = test
    else:
        c.w.note(f"fixed test split: {problem}.")
    if not sets:
        return
    valid = _validation_frames(c)
    if valid:  # calibration curve only: its metrics are the training section's valid_* numbers
        sets["validation"] = valid
    everything = [a for frames in sets.values() for a in frames]  # one model load for all sets
    try:
        preds = validated_predictions(c.predict(checkpoint, everything), everything)
    except (ImportError, OSError, RuntimeError, ValueError, KeyError) as exc:
        # A report must not die with the model: say why the audit is missing, keep the rest.
        c.w.note(f"model predictions failed ({type(exc).__name__}: {exc}); audit skipped.")
        return
    rows, data, start = [], {}, 0
    for name, frames in sets.items():
        d = audit_arrays(frames, preds[start:start + len(frames)], c.calibration)
        start += len(frames)
        data[name] = d
        if name != "validation":
            rows.append({"set": name, **audit_metrics(d)})
    table = pd.DataFrame(rows)
    prefix = {"new_labels": "audit", "fixed_test": "test"}
    for row in rows:
        p = prefix[row["set"]]
        c.put(**{f"{p}_{k}": v for k, v in row.items() if k != "set"})
    c.w.text("Model of this generation vs the labels. `new_labels`: the frames it selected (the "
             "audit); `fixed_test`: the seed dataset's test split, identical every generation. "
             "Spearman and ROC-AUC rank σ against the force error (ROC-AUC: top 20 % errors are bad).")
    c.w.table(table, "audit")
    _calibration_figure(c, data)
    if "new_labels" in data:
        d = data["new_labels"]
        m = rows[[r["set"] for r in rows].index("new_labels")]
        rho, auc = m["spearman_atom"], m["roc_auc_atom"]
        c.findings.append(f"audit on {m['n_frames']} new labels: force MAE {m['force_mae']:.4g} eV/Å, "
                          f"Spearman {format_value(rho)}, ROC-AUC {format_value(auc)}")
        c.w.figure(figures.parity(d.e_ref, d.e_pred, d.f_ref, d.f_pred,
                                  f"newly labeled frames ({m['n_frames']})"),
                   "parity", "Parity of energies per atom and force components on the newly labeled frames.")
        c.w.figure(figures.error_vs_sigma(d.atom_sigma, d.atom_error,
                                          f"per atom: Spearman {format_value(rho)}, ROC-AUC {format_value(auc)}"),
                   "error_vs_sigma", "Per-atom force error vs σ_i on the newly labeled frames.")
        frames = sets["new_labels"]
        c.w.table(pd.DataFrame({
            "frame_id": [a.info.get("frame_id") for a in frames],
            "walker": [a.info.get("walker") for a in frames],
            "sigma_config": d.frame_sigma, "force_error_config": d.frame_error,
            "energy_error_per_atom": d.e_pred - d.e_ref,
        }), "audit_frames", shown=False)


def _calibration_figure(c: Context, data: dict[str, AuditData]) -> None:
    """Calibration curves (mean error per σ bin) of each audit set, raw and calibrated."""
    label = {"new_labels": "new labels", "fixed_test": "fixed test", "validation": "validation (in-sample)"}
    curves, rows = {}, []
    for name, d in data.items():
        for scale, pred in (("raw σ", d.atom_sigma), ("calibrated", d.atom_calibrated)):
            if not pred.size:
                continue
            x, y, n = calibration_curve(pred, d.atom_error)
            curves[f"{label[name]}: {scale}"] = (x, y, n)
            rows += [{"set": name, "scale": scale, "bin_predicted": a, "bin_error": b, "n_atoms": k}
                     for a, b, k in zip(x, y, n, strict=True)]
    if not curves:
        return
    c.w.text("Calibration: atoms in 10 equal-count bins of the prediction (raw σ_i, or the calibrated expected "
             "error); a calibrated model lies on the diagonal. Miscalibration area = count-weighted mean "
             "|mean error − prediction| over the bins (eV/Å), in the table above. The validation split is "
             "where the calibration was fitted, so its calibrated curve is in-sample.")
    c.w.figure(figures.calibration_curves(curves, "per-atom force error vs prediction"), "calibration",
               "Calibration curves: mean realized force error per bin vs the bin's mean prediction.")
    c.w.table(pd.DataFrame(rows), "calibration_curves", shown=False)
