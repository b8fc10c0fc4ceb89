"""The selection audit: did high σ mean high error on the labels the model asked for?

`gen-XXX/audit/` (artifact.json: `SelectionAudit`, frames.csv) is written here only, by
`selection_audit` (the pipeline's `audit` step; the stop rule asks for it too). The
per-set arrays and metrics the report shows (`audit_arrays`, `audit_metrics`) live here
as well, so both read σ against error the same way (`uq.sigma_error_scores`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ase import Atoms

from eip_al import integrity
from eip_al.atomic import atomic_path
from eip_al.io import read_frames
from eip_al.metrics import atom_force_error
from eip_al.rundir import RunDir, load_valid
from eip_al.schemas import LabelingResult, SelectionAudit, TrainingResult
from eip_al.uq import Calibration, sigma_error_scores

log = logging.getLogger(__name__)

Predictor = Callable[[Path, list[Atoms]], list[dict[str, Any]]]


def predict_checkpoint(checkpoint: Path, frames: list[Atoms]) -> list[dict[str, Any]]:
    """Predictions (energy, forces, σ arrays) of `checkpoint` on `frames`, on CPU: the default
    `Predictor` of the audit, the stop rule and the report (tests inject their own)."""
    from eip_al.calculator import EIPCalculator  # lazy: torch only once a model is needed

    return EIPCalculator(checkpoint, device="cpu").predict_frames(frames)


def audit_dir(run: RunDir, gen: int) -> Path:
    """`gen-XXX/audit/`: the selection audit of generation `gen` (artifact.json, frames.csv)."""
    return run.step_dir(gen, "audit")


def selection_audit_from_predictions(
    run: RunDir,
    gen: int,
    training: TrainingResult,
    labeled_rel: str,
    frames: list[Atoms],
    preds: Sequence[dict[str, Any]],
    calibration: Calibration | None,
) -> SelectionAudit:
    """The audit of freshly labeled frames against the model that selected them; writes frames.csv."""
    if len(frames) != len(preds) or not frames:
        raise ValueError(f"need equally many frames and predictions (got {len(frames)}, {len(preds)})")
    sig, err, f_sig, f_err, f_cal = [], [], [], [], []
    for atoms, p in zip(frames, preds, strict=True):
        e = atom_force_error(np.asarray(p["forces"], float), atoms.get_forces())
        s = np.asarray(p["uncertainty"], float)
        sig.append(s)
        err.append(e)
        f_sig.append(float(s.mean()))
        f_err.append(float(e.mean()))
        f_cal.append(float(calibration.apply(s).mean()) if calibration is not None else math.nan)
    s_atom, e_atom = np.concatenate(sig), np.concatenate(err)
    fe, fc = np.array(f_err), np.array(f_cal)
    m = sigma_error_scores(s_atom, e_atom, np.array(f_sig), fe,
                           calibration.apply(s_atom) if calibration is not None else None)
    out = audit_dir(run, gen)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "frames.csv"
    table = pd.DataFrame({
        "frame_id": [a.info.get("frame_id") for a in frames], "walker": [a.info.get("walker") for a in frames],
        "sigma_config": f_sig, "calibrated_config": fc, "force_error_config": fe,
    })
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    return SelectionAudit(
        generation=gen, checkpoint=training.checkpoint, labeled_extxyz=labeled_rel,
        n_frames=len(frames), n_atoms=int(s_atom.size), frames_csv=run.rel(csv_path),
        force_error_config_mean=float(fe.mean()), force_error_config_max=float(fe.max()),
        sigma_config_mean=float(np.mean(f_sig)),
        calibrated_config_mean=float(fc.mean()) if calibration is not None else None,
        **m,
    )


def selection_audit(
    run: RunDir, gen: int, predict: Predictor | None = predict_checkpoint
) -> SelectionAudit | None:
    """Generation `gen`'s selection audit: the valid artifact, else computed and written.

    None when it cannot exist: no training or labeling result, nothing labeled, or no
    predictor. The model is the generation's own checkpoint (the one that selected).
    """
    path = run.artifact_path(gen, "audit")
    found = load_valid(path, SelectionAudit)
    if found is not None:
        return found
    training = load_valid(run.artifact_path(gen, "train"), TrainingResult)
    labeling = load_valid(run.artifact_path(gen, "label"), LabelingResult)
    if training is None or labeling is None or labeling.n_ok == 0 or predict is None:
        return None
    labeled = run.abs(labeling.labeled_extxyz)
    if not labeled.is_file() or labeled.stat().st_size == 0:
        return None
    frames = read_frames(labeled, require_cell=False)
    checkpoint = run.abs(training.checkpoint)
    preds = predict(checkpoint, frames)
    from eip_al.model.checkpoint import load_calibration  # lazy: torch only once a model is needed

    try:
        calibration = load_calibration(checkpoint)
    except Exception as exc:  # a stand-in checkpoint (tests) or an unreadable one: audit raw σ only
        log.warning("%s: no calibration (%s); auditing raw σ only", checkpoint, exc)
        calibration = None
    result = selection_audit_from_predictions(run, gen, training, labeling.labeled_extxyz, frames, preds,
                                              calibration)
    result = integrity.seal(result, run.root)
    result.write(path)
    return result


# ============================================================================ report sets
def validated_predictions(preds: list[dict[str, Any]], frames: list[Atoms]) -> list[dict[str, Any]]:
    if len(preds) != len(frames):
        raise ValueError(f"predictor returned {len(preds)} results for {len(frames)} frames")
    for i, (p, atoms) in enumerate(zip(preds, frames, strict=True)):
        n = len(atoms)
        if np.shape(p.get("forces")) != (n, 3) or np.shape(p.get("uncertainty")) != (n,):
            raise ValueError(f"prediction {i}: forces must be ({n}, 3) and uncertainty ({n},)")
    return preds


@dataclass
class AuditData:
    """Per-atom and per-frame errors and σ of the model on a labelled set of frames."""

    atom_sigma: np.ndarray
    atom_error: np.ndarray
    frame_sigma: np.ndarray
    frame_error: np.ndarray
    e_ref: np.ndarray  # eV/atom
    e_pred: np.ndarray
    f_ref: np.ndarray  # flattened components
    f_pred: np.ndarray
    aleatoric: np.ndarray  # per atom, may be empty
    atom_calibrated: np.ndarray = field(default_factory=lambda: np.empty(0))  # expected error, may be empty


def audit_arrays(
    frames: list[Atoms], preds: list[dict[str, Any]], calibration: Calibration | None = None
) -> AuditData:
    """Errors of predictions against the frames' labels (σ_i vs ‖ΔF_i‖ as in docs §4).

    The calibrated expected error per atom comes from the predictions
    (`calibrated_uncertainty`) or, when they lack it, from `calibration` applied to σ_i.
    """
    preds = validated_predictions(preds, frames)
    a_sig, a_err, f_sig, f_err, e_ref, e_pred, fr, fp, ale = [], [], [], [], [], [], [], [], []
    for atoms, p in zip(frames, preds, strict=True):
        ref_f = atoms.get_forces()
        pred_f = np.asarray(p["forces"], dtype=float)
        err = atom_force_error(pred_f, ref_f)
        sig = np.asarray(p["uncertainty"], dtype=float)
        a_sig.append(sig)
        a_err.append(err)
        f_sig.append(float(sig.mean()))
        f_err.append(float(err.mean()))
        e_ref.append(atoms.get_potential_energy() / len(atoms))
        e_pred.append(float(p["energy"]) / len(atoms))
        fr.append(ref_f.ravel())
        fp.append(pred_f.ravel())
        if "aleatoric_components" in p:
            ale.append(np.linalg.norm(np.asarray(p["aleatoric_components"], dtype=float), axis=1))
    sig_all = np.concatenate(a_sig)
    if all("calibrated_uncertainty" in p for p in preds):
        cal = np.concatenate([np.asarray(p["calibrated_uncertainty"], dtype=float) for p in preds])
    else:
        cal = calibration.apply(sig_all) if calibration is not None else np.empty(0)
    return AuditData(sig_all, np.concatenate(a_err), np.array(f_sig), np.array(f_err),
                     np.array(e_ref), np.array(e_pred), np.concatenate(fr), np.concatenate(fp),
                     np.concatenate(ale) if ale else np.empty(0), cal)


def audit_metrics(d: AuditData) -> dict[str, float | int | None]:
    """Accuracy and uncertainty-ranking quality (Spearman, ROC-AUC top-20 %) of an audit set."""
    diff = d.f_pred - d.f_ref
    return {
        "n_frames": int(d.frame_sigma.size), "n_atoms": int(d.atom_sigma.size),
        "energy_mae_per_atom": float(np.mean(np.abs(d.e_pred - d.e_ref))),
        "force_mae": float(np.mean(np.abs(diff))), "force_rmse": float(np.sqrt(np.mean(diff**2))),
        "sigma_mean": float(d.atom_sigma.mean()),
        "aleatoric_mean": float(d.aleatoric.mean()) if d.aleatoric.size else None,
        **sigma_error_scores(d.atom_sigma, d.atom_error, d.frame_sigma, d.frame_error, d.atom_calibrated),
    }
