"""Training the eIP model: `train_model` (any frames) and `train_generation` (one AL step).

AdamW on the evidential loss (docs/eip-method §2) with ReduceLROnPlateau and early
stopping on a fixed validation split; per-element reference energies by least squares
on the training split only; optional warm start from a previous checkpoint.

Files in `out_dir`:
* ``model.pt``    best checkpoint so far (lowest validation loss), what users load;
* ``last.pt``     full training state after every epoch (model, optimizer, scheduler,
  history, RNG), written atomically: a killed run continues from its last epoch;
* ``metrics.csv`` one row per epoch (losses, energy MAE/atom, force MAE/RMSE, mean σ,
  Spearman and ROC-AUC on the validation split).
* ``calibration.json`` σ → expected force error map fitted on the validation split after
  training (also stored in model.pt's metadata; docs/calibration.md).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from eip_al.atomic import atomic_write_bytes, atomic_write_text, sha256_file
from eip_al.config import ALConfig, ConfigError, ModelConfig, TrainConfig
from eip_al.io import FrameError, frame_id
from eip_al.metrics import atom_force_error
from eip_al.model.checkpoint import (
    checkpoint_payload,
    load_checkpoint,
    model_from_payload,
    read_payload,
    resolve_device,
    save_checkpoint,
)
from eip_al.model.eip import EIPModel, ModelSpec, fit_element_energies
from eip_al.model.errors import CheckpointError
from eip_al.model.evaluation import (
    evaluation_metrics,
    frames_to_graphs,
    predict_graphs,
    split_outputs,
)
from eip_al.model.head import Evidence, SymmetricHead
from eip_al.model.loss import total_loss
from eip_al.model.neighbors import Graph, collate
from eip_al.progress import Throttle, say
from eip_al.rundir import RunDir, RunDirError, load_valid
from eip_al.schemas import TrainingResult, ValidationMetrics
from eip_al.uq import CalibrationError, fit_calibration

BEST_NAME = "model.pt"
LAST_NAME = "last.pt"
METRICS_NAME = "metrics.csv"
CALIBRATION_NAME = "calibration.json"
GRAD_CLIP_NORM = 10.0  # evidential losses can spike when α→1 or ν→0; clipping keeps AdamW sane

METRIC_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_loss_force",
    "train_loss_energy",
    "valid_loss",
    "energy_mae_per_atom",
    "force_mae",
    "force_rmse",
    "sigma_mean",
    "aleatoric_mean",
    "spearman_atom",
    "roc_auc_atom",
    "spearman_config",
    "roc_auc_config",
    "miscalibration_area",
    "wall_s",
)

console = Console(stderr=True)


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


@dataclass
class _Data:
    """Frames as device tensors, prepared once: graphs, reference energies and forces."""

    frames: list[Atoms]
    graphs: list[Graph]
    energies: list[torch.Tensor]  # float64 scalars
    forces: list[torch.Tensor]  # (N, 3), model dtype


def _prepare(frames: Sequence[Atoms], model: EIPModel, where: str) -> _Data:
    graphs = [g.to(model.device, model.dtype) for g in frames_to_graphs(frames, model, where)]
    energies = [torch.tensor(a.get_potential_energy(), dtype=torch.float64, device=model.device) for a in frames]
    forces = [torch.as_tensor(a.get_forces(), dtype=model.dtype, device=model.device) for a in frames]
    return _Data(list(frames), graphs, energies, forces)


def _batch(data: _Data, idx: Sequence[int]) -> tuple[Graph, torch.Tensor, torch.Tensor]:
    g = collate([data.graphs[k] for k in idx])
    return g, torch.stack([data.energies[k] for k in idx]), torch.cat([data.forces[k] for k in idx])


def _loss(model: EIPModel, g: Graph, e_ref: torch.Tensor, f_ref: torch.Tensor, cfg: TrainConfig, create_graph: bool):
    out = model.predict(g, create_graph=create_graph)
    lc = cfg.loss
    evidence = Evidence(out["nu"], out["alpha"], out["beta"], out.get("shape"))
    n_atoms = torch.bincount(g.batch, minlength=g.n_graphs).to(torch.float64)
    loss, parts = total_loss(
        f_ref, out["forces"], evidence, e_ref, out["energy"], n_atoms,
        q=lc.q, lam=lc.lam, w_energy=lc.w_energy, k_force=lc.k_force,
    )
    return loss, parts, out


def _validate(model: EIPModel, data: _Data, cfg: TrainConfig) -> tuple[float, ValidationMetrics]:
    """Validation loss (frame-weighted mean over batches) and §4 metrics."""
    model.eval()
    total, preds = 0.0, []
    for start in range(0, len(data.graphs), cfg.batch_size):
        idx = list(range(start, min(start + cfg.batch_size, len(data.graphs))))
        g, e_ref, f_ref = _batch(data, idx)
        with torch.enable_grad():
            loss, _, out = _loss(model, g, e_ref, f_ref, cfg, create_graph=False)
        total += float(loss.detach()) * len(idx)
        preds += split_outputs(out, g)
    return total / len(data.graphs), evaluation_metrics(data.frames, preds)


def _fingerprint(
    train: Sequence[Atoms], valid: Sequence[Atoms], model_cfg: ModelConfig, train_cfg: TrainConfig, init: Path | None
) -> str:
    """Identity of a training job for resuming: data, configs (except epochs/time/device) and
    the init checkpoint's content (so a moved run directory still resumes)."""
    h = hashlib.sha256()
    for frames in (train, valid):
        h.update(json.dumps([frame_id(a) for a in frames]).encode())
        h.update(np.asarray([a.get_potential_energy() for a in frames]).tobytes())
    h.update(model_cfg.model_dump_json().encode())
    h.update(train_cfg.model_dump_json(exclude={"epochs", "max_time_s", "device"}).encode())
    h.update(bytes.fromhex(sha256_file(init)) if init is not None else b"cold start")
    return h.hexdigest()


def _check_frames(frames: Sequence[Atoms], name: str) -> None:
    if not frames:
        raise FrameError(f"{name}: no frames (training needs at least one train and one valid frame)")


def _new_model(
    train: Sequence[Atoms], model_cfg: ModelConfig, init: Path | None, device: torch.device
) -> EIPModel:
    """Fresh model (seeded) or warm start from `init`; reference energies refit on `train`."""
    elements = sorted({int(z) for a in train for z in a.numbers})
    dtype = getattr(torch, model_cfg.dtype)
    if init is None:
        model = EIPModel(ModelSpec.from_config(model_cfg, elements)).to(dtype)
        forces = np.concatenate([a.get_forces().ravel() for a in train])
        rms = float(np.sqrt(np.mean(forces**2)))
        model.energy_scale.fill_(rms if rms > 0 else 1.0)  # network outputs in units of typical forces
    else:
        model = model_from_payload(read_payload(init), init).to(dtype)
        want = ModelSpec.from_config(model_cfg, model.spec.elements)
        if want != model.spec:
            raise CheckpointError(
                f"{init}: cannot warm start: checkpoint model {model.spec.to_dict()} differs from "
                f"the configured model {want.to_dict()}"
            )
        missing = sorted(set(elements) - set(model.spec.elements))
        if missing:
            raise CheckpointError(
                f"{init}: cannot warm start: training data has elements {missing} the checkpoint lacks"
            )
        if isinstance(model.head, SymmetricHead):
            model.head.novelty.reset()  # refit on the new training split after training
    model.set_element_energies(fit_element_energies(train, model.spec.elements))
    return model.to(device)


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _save_state(path: Path, model: EIPModel, state: dict[str, Any]) -> None:
    payload = checkpoint_payload(model)
    payload["train_state"] = state
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_state(path: Path, fingerprint: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(payload, train_state) of a resumable `last.pt` made by the same job, else None."""
    if not path.exists():
        return None
    try:
        payload = read_payload(path)
    except CheckpointError as exc:
        console.print(f"[yellow]ignoring unusable {path}: {exc}[/]")
        return None
    state = payload.get("train_state")
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        console.print(f"[yellow]{path}: made by a different training job (data or config); starting afresh[/]")
        return None
    return payload, state


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
    """Train (or resume training) an eIP model; returns paths, counts and validation metrics.

    Early stopping and the LR schedule follow the validation loss. `epochs` overrides
    `train_cfg.epochs`. If `out_dir/last.pt` belongs to the same job (same frames,
    configs and init), training continues from it; a finished job is not redone (a
    larger `epochs` or a job stopped by the time limit continues).
    """
    _check_frames(train_frames, "train split")
    _check_frames(valid_frames, "valid split")
    if model_cfg.head == "symmetric" and train_cfg.loss.q != 0.5:
        raise ConfigError(
            f"train.loss.q: the symmetric head needs q = 0.5 (got {train_cfg.loss.q}); its loss has no "
            "frame-independent direction for the quantile shift. Use model.head: paper for q != 0.5"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path, metrics_path = out_dir / BEST_NAME, out_dir / LAST_NAME, out_dir / METRICS_NAME
    max_epochs = int(epochs if epochs is not None else train_cfg.epochs)
    if max_epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {max_epochs}")
    device = resolve_device(train_cfg.device)
    init = Path(init_checkpoint) if init_checkpoint is not None else None
    if init is not None and not init.is_file():
        raise CheckpointError(f"{init}: warm-start checkpoint not found (not a file)")
    fingerprint = _fingerprint(train_frames, valid_frames, model_cfg, train_cfg, init)
    shuffle = torch.Generator().manual_seed(train_cfg.seed)

    resumed = _load_state(last_path, fingerprint)
    if resumed is None:
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(train_cfg.seed)
            model = _new_model(train_frames, model_cfg, init, device)
        state: dict[str, Any] = {
            "fingerprint": fingerprint, "epoch": 0, "best_loss": math.inf, "best_epoch": 0,
            "bad_epochs": 0, "history": [], "stopped_reason": None, "elapsed_s": 0.0,
        }
    else:
        payload, state = resumed
        model = model_from_payload(payload, last_path).to(device)
        shuffle.set_state(state["shuffle_rng"])
    train = _prepare(train_frames, model, "train split")
    valid = _prepare(valid_frames, model, "valid split")
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=train_cfg.lr_factor, patience=train_cfg.lr_patience
    )
    if resumed is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])

    finished = state["stopped_reason"] == "early_stopping" or (
        state["stopped_reason"] is not None and state["epoch"] >= max_epochs
    )
    if not finished:
        state["stopped_reason"] = "max_epochs" if state["epoch"] >= max_epochs else None
    session_start = time.perf_counter()
    lines = Throttle(wait_first=True)  # plain lines where no live bar shows (logs, Prefect)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, disable=not progress or state["stopped_reason"] is not None) as bar:
        task = bar.add_task("training", total=max_epochs, completed=state["epoch"], info="")
        while state["stopped_reason"] is None:
            t_epoch = time.perf_counter()
            epoch = state["epoch"] + 1
            row = _train_epoch(model, train, optimizer, train_cfg, shuffle, epoch)
            valid_loss, metrics = _validate(model, valid, train_cfg)
            scheduler.step(valid_loss)
            if valid_loss < state["best_loss"]:
                state.update(best_loss=valid_loss, best_epoch=epoch, bad_epochs=0)
                save_checkpoint(best_path, model, extra={"epoch": epoch, "valid_loss": valid_loss})
            else:
                state["bad_epochs"] += 1
            if state["bad_epochs"] >= train_cfg.early_stopping_patience:
                state["stopped_reason"] = "early_stopping"
            elif epoch >= max_epochs:
                state["stopped_reason"] = "max_epochs"
            elif train_cfg.max_time_s is not None and time.perf_counter() - session_start >= train_cfg.max_time_s:
                state["stopped_reason"] = "time_limit"
            row.update(valid_loss=valid_loss, **metrics.model_dump(exclude={"n_frames"}),
                       wall_s=time.perf_counter() - t_epoch)
            state["history"].append(row)
            state.update(epoch=epoch, elapsed_s=state["elapsed_s"] + row["wall_s"],
                         optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                         shuffle_rng=shuffle.get_state())
            _write_metrics(metrics_path, state["history"])
            _save_state(last_path, model, state)
            bar.update(task, completed=epoch,
                       info=f"valid F-MAE {metrics.force_mae:.4f} eV/Å  σ {metrics.sigma_mean:.3f} eV/Å")
            if progress and not console.is_terminal and lines.due():
                say("train", f"epoch {epoch}/{max_epochs}: valid F-MAE {metrics.force_mae:.4f} eV/Å, "
                             f"{row['wall_s']:.1f} s/epoch")

    t_final = time.perf_counter()
    best_model, meta = load_checkpoint(best_path, device)  # CheckpointError if it went missing
    if model_cfg.novelty and isinstance(best_model.head, SymmetricHead) and not best_model.head.novelty.fitted:
        best_model.fit_novelty(train.graphs)
        save_checkpoint(best_path, best_model, extra=meta.get("extra", {}))
    final, calibration_path = _calibrate(best_model, meta, valid, train_cfg, best_path)
    return TrainOutcome(
        checkpoint=best_path,
        last_checkpoint=last_path,
        metrics_csv=metrics_path,
        n_train=len(train_frames),
        n_valid=len(valid_frames),
        epochs_run=int(state["epoch"]),
        best_epoch=int(state["best_epoch"]),
        stopped_reason=state["stopped_reason"],
        device=str(device),
        wall_time_s=float(state["elapsed_s"]) + time.perf_counter() - t_final,
        valid=final,
        element_energies=best_model.element_energy_dict(),
        warm_started_from=init,
        calibration=calibration_path,
    )


def _calibrate(
    model: EIPModel, meta: dict[str, Any], valid: _Data, cfg: TrainConfig, best_path: Path
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


def _train_epoch(
    model: EIPModel, data: _Data, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
    shuffle: torch.Generator, epoch: int,
) -> dict[str, Any]:
    """One pass over the shuffled training frames; returns the epoch's mean training losses."""
    model.train()
    order = torch.randperm(len(data.graphs), generator=shuffle).tolist()
    sums = {"train_loss": 0.0, "train_loss_force": 0.0, "train_loss_energy": 0.0}
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        g, e_ref, f_ref = _batch(data, idx)
        loss, parts, _ = _loss(model, g, e_ref, f_ref, cfg, create_graph=True)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {float(loss)} in epoch {epoch}; lower train.lr "
                f"(now {optimizer.param_groups[0]['lr']:g}) or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
        optimizer.step()
        sums["train_loss"] += float(loss.detach()) * len(idx)
        sums["train_loss_force"] += parts["loss_force"] * len(idx)
        sums["train_loss_energy"] += parts["loss_energy"] * len(idx)
    return {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **{k: v / len(order) for k, v in sums.items()}}


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
    outcome = train_model(
        parts["train"], parts["valid"], cfg.model, cfg.train, run.step_dir(gen, "train"), init_checkpoint=init
    )
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
