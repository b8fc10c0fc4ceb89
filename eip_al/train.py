"""Training a generation's model: `train_model` (the eIP model on any frames),
`train_ensemble` (M head-less members) and `train_generation` (one AL step, the source
`model.uncertainty` names; docs/model.md). Every model goes through the one loop,
`eip_al.fit.fit` (its files: model.pt, last.pt, metrics.csv).

Per-element reference energies by least squares on the training split only; optional warm
start from the previous generation's checkpoint. After training: the symmetric head's novelty
fit (eIP) and ``calibration.json``, the σ → expected force error map fitted on the validation
split (also stored in model.pt's metadata; docs/calibration.md). An ensemble's members train
in ``member-<k>/`` (each resumable by itself); ``model.pt`` holds all members in one file.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from eip_al.atomic import atomic_write_text
from eip_al.config import ALConfig, ConfigError, ModelConfig, TrainConfig
from eip_al.fit import (
    BEST_NAME,
    EVIDENTIAL,
    LAST_NAME,
    METRIC_COLUMNS,
    METRICS_NAME,
    MSE,
    Fitted,
    PreparedFrames,
    console,
    fit,
    job_fingerprint,
    new_plain_model,
    scale_to_forces,
)
from eip_al.metrics import atom_force_error
from eip_al.model.checkpoint import (
    model_from_payload,
    read_payload,
    resolve_device,
    save_checkpoint,
)
from eip_al.model.eip import EIPModel, ModelSpec, PlainPaiNN, fit_element_energies
from eip_al.model.ensemble import EnsembleModel
from eip_al.model.errors import CheckpointError
from eip_al.model.evaluation import evaluation_metrics, predict_graphs
from eip_al.model.head import SymmetricHead
from eip_al.rundir import RunDir, RunDirError, load_valid
from eip_al.schemas import TrainingResult, ValidationMetrics
from eip_al.uq import CalibrationError, fit_calibration

CALIBRATION_NAME = "calibration.json"

@dataclass
class TrainOutcome:
    """What `train_model` produced (absolute paths); `train_generation` turns it into a TrainingResult."""

    checkpoint: Path
    last_checkpoint: Path
    metrics_csv: Path
    n_train: int
    n_valid: int
    epochs_run: int
    best_epoch: int
    stopped_reason: str
    device: str
    wall_time_s: float
    valid: ValidationMetrics
    element_energies: dict[str, float]
    warm_started_from: Path | None
    calibration: Path | None = None  # calibration.json beside the checkpoint (docs/calibration.md)


def _new_model(
    train: Sequence[Atoms], model_cfg: ModelConfig, init: Path | None, device: torch.device
) -> EIPModel:
    """Fresh eIP model (seeded by the caller) or warm start from `init`; reference energies refit on `train`."""
    elements = sorted({int(z) for a in train for z in a.numbers})
    dtype = getattr(torch, model_cfg.dtype)
    if init is None:
        model = EIPModel(ModelSpec.from_config(model_cfg, elements)).to(dtype)
        scale_to_forces(model, train)
    else:
        model = model_from_payload(read_payload(init), init).to(dtype)
        if not isinstance(model, EIPModel):
            raise CheckpointError(f"{init}: cannot warm start an eIP model from a {type(model).__name__} checkpoint")
        _check_warm_start(init, model, model_cfg, elements)
        if isinstance(model.head, SymmetricHead):
            model.head.novelty.reset()  # refit on the new training split after training
    model.set_element_energies(fit_element_energies(train, model.spec.elements))
    return model.to(device)


def _check_warm_start(init: Path, model: PlainPaiNN, model_cfg: ModelConfig, elements: Sequence[int]) -> None:
    want = ModelSpec.from_config(model_cfg, model.spec.elements)
    if want != model.spec:
        raise CheckpointError(
            f"{init}: cannot warm start: checkpoint model {model.spec.to_dict()} differs from "
            f"the configured model {want.to_dict()}"
        )
    missing = sorted(set(elements) - set(model.spec.elements))
    if missing:
        raise CheckpointError(f"{init}: cannot warm start: training data has elements {missing} the checkpoint lacks")


def train_model(
    train_frames: Sequence[Atoms],
    valid_frames: Sequence[Atoms],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    out_dir: Path,
    init_checkpoint: Path | None = None,
    epochs: int | None = None,
    progress: bool = True,
) -> TrainOutcome:
    """Train (or resume training) an eIP model with `fit`; then the novelty fit and the
    calibration. Returns paths, counts and validation metrics; `epochs` overrides
    `train_cfg.epochs`."""
    if model_cfg.head == "symmetric" and train_cfg.loss.q != 0.5:
        raise ConfigError(
            f"train.loss.q: the symmetric head needs q = 0.5 (got {train_cfg.loss.q}); its loss has no "
            "frame-independent direction for the quantile shift. Use model.head: paper for q != 0.5"
        )
    device = resolve_device(train_cfg.device)
    init = Path(init_checkpoint) if init_checkpoint is not None else None
    if init is not None and not init.is_file():
        raise CheckpointError(f"{init}: warm-start checkpoint not found (not a file)")
    fingerprint = job_fingerprint(train_frames, valid_frames, model_cfg, train_cfg, init)
    fitted = fit(lambda: _new_model(train_frames, model_cfg, init, device), train_frames, valid_frames,
                 EVIDENTIAL, train_cfg, Path(out_dir), fingerprint, epochs, progress)
    t_final = time.perf_counter()
    best_model, meta, best_path = fitted.model, fitted.meta, Path(out_dir) / BEST_NAME
    if model_cfg.novelty and isinstance(best_model.head, SymmetricHead) and not best_model.head.novelty.fitted:
        best_model.fit_novelty(fitted.train.graphs)
        save_checkpoint(best_path, best_model, extra=meta.get("extra", {}))
    final, calibration_path = _calibrate(best_model, meta, fitted.valid, train_cfg, best_path)
    return _outcome(fitted, best_path, device, final, init, calibration_path, time.perf_counter() - t_final)


def _outcome(fitted: Fitted, best_path: Path, device: torch.device, final: ValidationMetrics, init: Path | None,
             calibration: Path | None, extra_s: float) -> TrainOutcome:
    state = fitted.state
    return TrainOutcome(
        checkpoint=best_path,
        last_checkpoint=best_path.with_name(LAST_NAME),
        metrics_csv=best_path.with_name(METRICS_NAME),
        n_train=len(fitted.train.frames),
        n_valid=len(fitted.valid.frames),
        epochs_run=int(state["epoch"]),
        best_epoch=int(state["best_epoch"]),
        stopped_reason=state["stopped_reason"],
        device=str(device),
        wall_time_s=float(state["elapsed_s"]) + extra_s,
        valid=final,
        element_energies=fitted.model.element_energy_dict(),
        warm_started_from=init,
        calibration=calibration,
    )


def _calibrate(
    model: EIPModel | EnsembleModel, meta: dict[str, Any], valid: PreparedFrames, cfg: TrainConfig, best_path: Path
) -> tuple[ValidationMetrics, Path | None]:
    """Fit σ → expected force error on the validation split (docs/calibration.md).

    The map goes into the best checkpoint's `extra["calibration"]` (what the calculator
    reads) and `calibration.json` beside it; returns the final validation metrics
    (with the in-sample calibrated miscalibration area) and the JSON path (None if the
    split has too few usable atoms to fit).
    """
    preds = predict_graphs(model, valid.graphs, batch_size=cfg.batch_size)
    f_ref = np.concatenate([a.get_forces() for a in valid.frames])
    sigma = np.concatenate([p["uncertainty"] for p in preds])
    error = atom_force_error(np.concatenate([p["forces"] for p in preds]), f_ref)
    json_path = best_path.with_name(CALIBRATION_NAME)
    try:
        calibration = fit_calibration(sigma, error)
    except CalibrationError as exc:
        console.print(f"[yellow]no uncertainty calibration: {exc}[/]")
        json_path.unlink(missing_ok=True)
        return evaluation_metrics(valid.frames, preds), None
    extra = {**meta.get("extra", {}), "calibration": calibration.model_dump(mode="json")}
    save_checkpoint(best_path, model, extra=extra)
    calibration.save(json_path)
    for p in preds:
        p["calibrated_uncertainty"] = calibration.apply(p["uncertainty"])
    return evaluation_metrics(valid.frames, preds), json_path


def train_ensemble(
    train_frames: Sequence[Atoms],
    valid_frames: Sequence[Atoms],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    out_dir: Path,
    init_checkpoint: Path | None = None,
    epochs: int | None = None,
    progress: bool = True,
) -> TrainOutcome:
    """`model_cfg.ensemble_size` head-less PaiNNs, member k seeded `train_cfg.seed` + k, each
    trained by `fit` (MSE) in ``out_dir/member-<k>/`` (its own resume point and time limit);
    then ``model.pt`` = all members (`EnsembleModel`), the calibration and the validation metrics
    of the ensemble's σ. Warm start: member k from member k of the ensemble checkpoint `init`.

    The outcome counts the real cost: `wall_time_s` sums the members; `epochs_run` and
    `best_epoch` are the largest over members; ``metrics.csv`` holds the member-mean curves.
    """
    device = resolve_device(train_cfg.device)
    init = Path(init_checkpoint) if init_checkpoint is not None else None
    starts = _warm_members(init, train_frames, model_cfg)
    members: list[Fitted] = []
    for k in range(model_cfg.ensemble_size):
        cfg_k = train_cfg.model_copy(update={"seed": train_cfg.seed + k})
        fingerprint = job_fingerprint(train_frames, valid_frames, model_cfg, cfg_k, init, tag=f"{MSE.name} member {k}")
        start = starts[k] if starts else None
        members.append(fit(lambda start=start: new_plain_model(train_frames, model_cfg, start).to(device),
                           train_frames, valid_frames, MSE, cfg_k, Path(out_dir) / f"member-{k}", fingerprint,
                           epochs, progress, label=f"member {k + 1}/{model_cfg.ensemble_size}"))
    t_final = time.perf_counter()
    ensemble = EnsembleModel([m.model for m in members])
    best_path = Path(out_dir) / BEST_NAME
    meta = {"extra": {"members": [{"best_epoch": m.state["best_epoch"], "valid_loss": m.state["best_loss"],
                                   "stopped_reason": m.state["stopped_reason"]} for m in members]}}
    save_checkpoint(best_path, ensemble, extra=meta["extra"])
    final, calibration_path = _calibrate(ensemble, meta, members[0].valid, train_cfg, best_path)
    _write_mean_metrics(best_path.with_name(METRICS_NAME), [m.state["history"] for m in members])
    reasons = {m.state["stopped_reason"] for m in members}
    return TrainOutcome(
        checkpoint=best_path,
        last_checkpoint=Path(out_dir) / "member-0" / LAST_NAME,
        metrics_csv=best_path.with_name(METRICS_NAME),
        n_train=len(train_frames),
        n_valid=len(valid_frames),
        epochs_run=max(int(m.state["epoch"]) for m in members),
        best_epoch=max(int(m.state["best_epoch"]) for m in members),
        stopped_reason=("time_limit" if "time_limit" in reasons else
                        "early_stopping" if reasons == {"early_stopping"} else "max_epochs"),
        device=str(device),
        wall_time_s=sum(float(m.state["elapsed_s"]) for m in members) + time.perf_counter() - t_final,
        valid=final,
        element_energies=ensemble.element_energy_dict(),
        warm_started_from=init,
        calibration=calibration_path,
    )


def _warm_members(init: Path | None, train: Sequence[Atoms], model_cfg: ModelConfig) -> list[PlainPaiNN] | None:
    """The members of the warm-start ensemble checkpoint `init` (None: cold start)."""
    if init is None:
        return None
    if not init.is_file():
        raise CheckpointError(f"{init}: warm-start checkpoint not found (not a file)")
    model = model_from_payload(read_payload(init), init).to(getattr(torch, model_cfg.dtype))
    if not isinstance(model, EnsembleModel) or len(model.members) < model_cfg.ensemble_size:
        raise CheckpointError(
            f"{init}: cannot warm start an ensemble of {model_cfg.ensemble_size} from this checkpoint "
            f"({type(model).__name__}{f' of {len(model.members)}' if isinstance(model, EnsembleModel) else ''})"
        )
    elements = sorted({int(z) for a in train for z in a.numbers})
    for member in model.members:
        _check_warm_start(init, member, model_cfg, elements)
    return list(model.members)


def _write_mean_metrics(path: Path, histories: list[list[dict[str, Any]]]) -> None:
    """metrics.csv of an ensemble: per epoch, the mean over the members that ran it."""
    buf = io.StringIO()
    columns = [c for c in METRIC_COLUMNS if all(c in h[0] for h in histories)]
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for epoch in range(1, max(len(h) for h in histories) + 1):
        rows = [h[epoch - 1] for h in histories if len(h) >= epoch]
        writer.writerow({c: np.mean([float(r[c]) for r in rows if r.get(c) is not None]) for c in columns})
    atomic_write_text(path, buf.getvalue())


TRAINERS = {"evidential": train_model, "ensemble": train_ensemble}  # model.uncertainty → how it trains


def train_generation(cfg: ALConfig, run: RunDir, gen: int) -> TrainingResult:
    """Train generation `gen` on `run.dataset_for(gen)` ('train' split; early stopping on 'valid').

    Warm-starts from generation gen−1's best checkpoint when `cfg.train.warm_start`.
    Writes model.pt, last.pt and metrics.csv into `gen-XXX/train/`; the caller writes
    the returned artifact (e.g. with `run_step`). The 'test' split is never read.
    """
    from eip_al.data import load_dataset, split_frames

    manifest = run.dataset_for(gen)
    dataset = run.abs(manifest.dataset_extxyz)
    parts = split_frames(load_dataset(run, manifest), str(dataset))  # verified before any training
    init = None
    if cfg.train.warm_start and gen > 0:
        prev_path = run.artifact_path(gen - 1, "train")
        prev = load_valid(prev_path, TrainingResult)
        if prev is None:
            raise RunDirError(f"{prev_path}: warm start needs generation {gen - 1}'s training result")
        init = run.abs(prev.checkpoint)
    outcome = TRAINERS[cfg.model.uncertainty](parts["train"], parts["valid"], cfg.model, cfg.train, run.step_dir(gen, "train"), init_checkpoint=init)
    return TrainingResult(
        generation=gen,
        checkpoint=run.rel(outcome.checkpoint),
        metrics_csv=run.rel(outcome.metrics_csv),
        dataset=manifest.dataset_extxyz,
        n_train=outcome.n_train,
        n_valid=outcome.n_valid,
        epochs_run=outcome.epochs_run,
        best_epoch=outcome.best_epoch,
        stopped_reason=outcome.stopped_reason,  # type: ignore[arg-type]
        warm_started_from=run.rel(init) if init is not None else None,
        device=outcome.device,
        wall_time_s=outcome.wall_time_s,
        valid=outcome.valid,
        element_energies=outcome.element_energies,
        calibration=run.rel(outcome.calibration) if outcome.calibration is not None else None,
    )
