"""THE training loop (`fit`), shared by every model kind: the eIP model (evidential loss,
`EVIDENTIAL`) and head-less PaiNNs (force/energy MSE, `MSE`: ensemble members, the UQ
benchmark's baselines). The loss and the model are its parameters; everything else is one code:
AdamW, ReduceLROnPlateau and early stopping on a fixed validation split, gradient clipping,
the time limit, progress, and the files in `out_dir`:

* ``model.pt``    best checkpoint so far (lowest validation loss);
* ``last.pt``     full training state after every epoch (model, optimizer, scheduler,
  history, RNG), written atomically: a killed run continues from its last epoch;
* ``metrics.csv`` one row per epoch (losses, the objective's validation metrics: energy
  MAE/atom, force MAE/RMSE, and for eIP mean σ, Spearman, ROC-AUC).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from eip_al.atomic import atomic_write_bytes, atomic_write_text, sha256_file
from eip_al.config import ConfigError, ModelConfig, TrainConfig
from eip_al.io import FrameError, frame_id
from eip_al.metrics import force_errors
from eip_al.model.checkpoint import checkpoint_payload, read_payload, save_checkpoint
from eip_al.model.eip import EIPModel, ModelSpec, PlainPaiNN, fit_element_energies
from eip_al.model.errors import CheckpointError
from eip_al.model.evaluation import evaluation_metrics, frames_to_graphs, split_outputs
from eip_al.model.head import Evidence
from eip_al.model.loss import MSE_ENERGY_WEIGHT, mse_loss, total_loss
from eip_al.model.neighbors import Graph, collate
from eip_al.progress import Throttle, say

BEST_NAME = "model.pt"
LAST_NAME = "last.pt"
METRICS_NAME = "metrics.csv"
CALIBRATION_NAME = "calibration.json"
GRAD_CLIP_NORM = 10.0  # evidential losses can spike when α→1 or ν→0; clipping keeps AdamW sane
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # train.amp → autocast dtype

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
Trainable = EIPModel | PlainPaiNN  # what `fit` trains (an ensemble: each member by itself)


@dataclass
class PreparedFrames:
    """Frames as device tensors, prepared once: graphs, reference energies and forces."""

    frames: list[Atoms]
    graphs: list[Graph]
    energies: list[torch.Tensor]  # float64 scalars
    forces: list[torch.Tensor]  # (N, 3), model dtype


def _prepare(frames: Sequence[Atoms], model: Trainable, where: str) -> PreparedFrames:
    graphs = [g.to(model.device, model.dtype) for g in frames_to_graphs(frames, model, where)]
    energies = [torch.tensor(a.get_potential_energy(), dtype=torch.float64, device=model.device) for a in frames]
    forces = [torch.as_tensor(a.get_forces(), dtype=model.dtype, device=model.device) for a in frames]
    return PreparedFrames(list(frames), graphs, energies, forces)


def _batch(data: PreparedFrames, idx: Sequence[int]) -> tuple[Graph, torch.Tensor, torch.Tensor]:
    g = collate([data.graphs[k] for k in idx])
    return g, torch.stack([data.energies[k] for k in idx]), torch.cat([data.forces[k] for k in idx])


LossFn = Callable[[Any, Graph, torch.Tensor, torch.Tensor, TrainConfig, bool],
                  tuple[torch.Tensor, dict[str, float], dict[str, torch.Tensor]]]
MetricsFn = Callable[[Sequence[Atoms], list[tuple[dict[str, torch.Tensor], Graph]]], dict[str, Any]]


@dataclass(frozen=True)
class Objective:
    """What the one training loop (`fit`) minimises and reports per epoch: eIP's evidential
    loss (`EVIDENTIAL`) or the force/energy MSE of head-less PaiNNs (`MSE`, ensemble members
    and the benchmark's baselines). `loss(model, g, e_ref, f_ref, cfg, create_graph)` →
    (loss, {loss_force, loss_energy}, predictions); `metrics(frames, [(predictions, g)])` →
    the validation columns of metrics.csv."""

    name: str  # part of the resume fingerprint ("" for eIP: its last.pt files predate objectives)
    loss: LossFn
    metrics: MetricsFn


def _n_atoms(g: Graph) -> torch.Tensor:
    return torch.bincount(g.batch, minlength=g.n_graphs).to(torch.float64)


def _evidential_loss(model: EIPModel, g: Graph, e_ref: torch.Tensor, f_ref: torch.Tensor, cfg: TrainConfig,
                     create_graph: bool):
    out = model.predict(g, create_graph=create_graph)
    lc = cfg.loss
    evidence = Evidence(out["nu"], out["alpha"], out["beta"], out.get("shape"))
    loss, parts = total_loss(
        f_ref, out["forces"], evidence, e_ref, out["energy"], _n_atoms(g),
        q=lc.q, lam=lc.lam, w_energy=lc.w_energy, k_force=lc.k_force,
    )
    return loss, parts, out


def _evidential_metrics(frames: Sequence[Atoms], outs: list[tuple[dict[str, torch.Tensor], Graph]]) -> dict[str, Any]:
    preds = [p for out, g in outs for p in split_outputs(out, g)]
    return evaluation_metrics(frames, preds).model_dump(exclude={"n_frames"})


def mse_objective(w_energy: float = MSE_ENERGY_WEIGHT) -> Objective:
    """The plain force/energy MSE (`eip_al.model.loss.mse_loss`) with energy weight λ_E = `w_energy`."""

    def loss(model: PlainPaiNN, g: Graph, e_ref: torch.Tensor, f_ref: torch.Tensor, cfg: TrainConfig,
             create_graph: bool):
        out = model.predict(g, create_graph=create_graph)
        value, parts = mse_loss(f_ref, out["forces"], e_ref, out["energy"], _n_atoms(g), w_energy)
        return value, parts, out

    return Objective("mse" if w_energy == MSE_ENERGY_WEIGHT else f"mse w_energy={w_energy!r}", loss, _accuracy_metrics)


def _accuracy_metrics(frames: Sequence[Atoms], outs: list[tuple[dict[str, torch.Tensor], Graph]]) -> dict[str, Any]:
    f_pred = np.concatenate([out["forces"].detach().to("cpu", torch.float64).numpy() for out, _ in outs])
    e_pred = np.concatenate([out["energy"].detach().cpu().numpy() for out, _ in outs])
    e_ref = np.array([a.get_potential_energy() for a in frames])
    n_atoms = np.array([len(a) for a in frames])
    return {"energy_mae_per_atom": float(np.mean(np.abs(e_pred - e_ref) / n_atoms)),
            **force_errors(f_pred, np.concatenate([a.get_forces() for a in frames]))}


EVIDENTIAL = Objective("", _evidential_loss, _evidential_metrics)
MSE = mse_objective()


def _validate(model: Trainable, data: PreparedFrames, cfg: TrainConfig, objective: Objective) -> tuple[float, dict[str, Any]]:
    """Validation loss (frame-weighted mean over batches) and the objective's metrics."""
    model.eval()
    total, outs = 0.0, []
    for start in range(0, len(data.graphs), cfg.batch_size):
        idx = list(range(start, min(start + cfg.batch_size, len(data.graphs))))
        g, e_ref, f_ref = _batch(data, idx)
        with torch.enable_grad():
            loss, _, out = objective.loss(model, g, e_ref, f_ref, cfg, False)
        total += float(loss.detach()) * len(idx)
        outs.append((out, g))
    return total / len(data.graphs), objective.metrics(data.frames, outs)


def job_fingerprint(
    train: Sequence[Atoms], valid: Sequence[Atoms], model_cfg: ModelConfig, train_cfg: TrainConfig,
    init: Path | None, tag: str = "",
) -> str:
    """Identity of a training job for resuming: data, configs (except epochs/time/device and
    the uncertainty-source choice, which does not change one model's training), the init
    checkpoint's content (so a moved run directory still resumes) and `tag` (objective, member).

    `train.amp` is part of it, unlike the device: CPU and GPU both train in float32 and differ
    only in rounding order, while bf16/fp16 autocast lowers the precision of every layer (8 or
    11 significant bits instead of 24), which can change what the model converges to (the
    reason bench/bench_train.py measures its accuracy). A last.pt from an fp32 run continued
    under bf16 would mix two trainings. It enters only when set, so that the fingerprints of
    last.pt files written before the option existed (amp off) stay the same and still resume."""
    h = hashlib.sha256()
    for frames in (train, valid):
        h.update(json.dumps([frame_id(a) for a in frames]).encode())
        h.update(np.asarray([a.get_potential_energy() for a in frames]).tobytes())
    h.update(model_cfg.model_dump_json(exclude={"uncertainty", "ensemble_size"}).encode())
    not_identity = {"epochs", "max_time_s", "device"} | ({"amp"} if train_cfg.amp == "off" else set())
    h.update(train_cfg.model_dump_json(exclude=not_identity).encode())
    h.update(bytes.fromhex(sha256_file(init)) if init is not None else b"cold start")
    h.update(tag.encode())
    return h.hexdigest()


def check_frames(frames: Sequence[Atoms], name: str) -> None:
    if not frames:
        raise FrameError(f"{name}: no frames (training needs at least one train and one valid frame)")


def scale_to_forces(model: PlainPaiNN, train: Sequence[Atoms]) -> None:
    """Network outputs in units of typical forces: energy scale = RMS training force."""
    rms = float(np.sqrt(np.mean(np.concatenate([a.get_forces().ravel() for a in train]) ** 2)))
    model.energy_scale.fill_(rms if rms > 0 else 1.0)


def new_plain_model(
    train: Sequence[Atoms], model_cfg: ModelConfig, init: PlainPaiNN | None = None,
    make: Callable[[ModelSpec], PlainPaiNN] = PlainPaiNN,
) -> PlainPaiNN:
    """Fresh head-less PaiNN `make(spec)` (seeded by the caller) or a copy of `init`; energy
    scale = RMS training force, reference energies fit on `train`."""
    elements = sorted({int(z) for a in train for z in a.numbers})
    if init is None:
        model = make(ModelSpec.from_config(model_cfg, elements)).to(getattr(torch, model_cfg.dtype))
        scale_to_forces(model, train)
    else:
        model = copy.deepcopy(init)
    model.set_element_energies(fit_element_energies(train, model.spec.elements))
    return model


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _save_state(path: Path, model: Trainable, state: dict[str, Any]) -> None:
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


@dataclass
class Fitted:
    """What `fit` leaves: the model with its best-epoch weights (eval mode), the best
    checkpoint's metadata, the prepared splits and the final training state."""

    model: Any
    meta: dict[str, Any]
    train: PreparedFrames
    valid: PreparedFrames
    state: dict[str, Any]


class MixedPrecision:
    """`train.amp` in one `fit`: the autocast context of the training forward (loss, forces
    and their double backward) and, for fp16, the GradScaler that keeps small gradients from
    underflowing (bf16 has float32's exponent range and needs none). Validation never uses it."""

    def __init__(self, cfg: TrainConfig, model: Trainable):
        self.dtype = AMP_DTYPES.get(cfg.amp)
        self.device_type = model.device.type
        if self.dtype is not None and model.dtype != torch.float32:
            raise ConfigError(f"train.amp: {cfg.amp!r} needs model.dtype float32 (got "
                              f"{str(model.dtype).removeprefix('torch.')}; autocast leaves float64 alone)")
        if cfg.amp == "fp16" and self.device_type != "cuda":
            raise ConfigError(f"train.amp: 'fp16' needs a CUDA device (training runs on {self.device_type}); "
                              "use 'bf16' or 'off'")
        self.scaler = torch.amp.GradScaler(self.device_type) if cfg.amp == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, model: Trainable, optimizer: torch.optim.Optimizer) -> None:
        """Backward (outside autocast), gradient clipping on the true gradients, optimizer step."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
        self.scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        self.scaler.update()


def fit(
    build: Callable[[], Trainable],
    train_frames: Sequence[Atoms],
    valid_frames: Sequence[Atoms],
    objective: Objective,
    train_cfg: TrainConfig,
    out_dir: Path,
    fingerprint: str,
    epochs: int | None = None,
    progress: bool = True,
    label: str = "training",
) -> Fitted:
    """THE training loop, for every model kind: AdamW on `objective`, ReduceLROnPlateau and
    early stopping on the validation loss, gradient clipping, `train_cfg.max_time_s`,
    `train_cfg.amp` (mixed-precision training forward, `MixedPrecision`), progress,
    `model.pt` (best) / `last.pt` (resume) / metrics.csv in `out_dir`.

    `build()` makes the fresh model (called under `train_cfg.seed`); a `last.pt` with the same
    `fingerprint` continues (its weights go into a built model); a finished job is not redone
    (a larger `epochs` or a job stopped by the time limit continues). Each epoch row also
    records its process CPU time (`cpu_s`) and the wall time of its training pass alone
    (`train_s`, without validation and checkpoints); neither is a metrics.csv column.
    """
    check_frames(train_frames, "train split")
    check_frames(valid_frames, "valid split")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path, metrics_path = out_dir / BEST_NAME, out_dir / LAST_NAME, out_dir / METRICS_NAME
    max_epochs = int(epochs if epochs is not None else train_cfg.epochs)
    if max_epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {max_epochs}")
    shuffle = torch.Generator().manual_seed(train_cfg.seed)
    resumed = _load_state(last_path, fingerprint)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(train_cfg.seed)
        model = build()
    if resumed is None:
        state: dict[str, Any] = {
            "fingerprint": fingerprint, "epoch": 0, "best_loss": math.inf, "best_epoch": 0,
            "bad_epochs": 0, "history": [], "stopped_reason": None, "elapsed_s": 0.0,
        }
    else:
        payload, state = resumed
        _load_weights(model, payload, last_path)
        shuffle.set_state(state["shuffle_rng"])
    train = _prepare(train_frames, model, "train split")
    valid = _prepare(valid_frames, model, "valid split")
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=train_cfg.lr_factor, patience=train_cfg.lr_patience
    )
    amp = MixedPrecision(train_cfg, model)
    if resumed is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if amp.scaler is not None and "grad_scaler" in state:
            amp.scaler.load_state_dict(state["grad_scaler"])

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
        task = bar.add_task(label, total=max_epochs, completed=state["epoch"], info="")
        while state["stopped_reason"] is None:
            t_epoch, c_epoch = time.perf_counter(), time.process_time()
            epoch = state["epoch"] + 1
            row = _train_epoch(model, train, optimizer, train_cfg, shuffle, epoch, objective, amp)
            row["train_s"] = time.perf_counter() - t_epoch  # synchronized: the epoch reads every loss
            valid_loss, metrics = _validate(model, valid, train_cfg, objective)
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
            row.update(valid_loss=valid_loss, **metrics, wall_s=time.perf_counter() - t_epoch,
                       cpu_s=time.process_time() - c_epoch)
            state["history"].append(row)
            state.update(epoch=epoch, elapsed_s=state["elapsed_s"] + row["wall_s"],
                         optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                         shuffle_rng=shuffle.get_state())
            if amp.scaler is not None:
                state["grad_scaler"] = amp.scaler.state_dict()
            _write_metrics(metrics_path, state["history"])
            _save_state(last_path, model, state)
            info = f"valid F-MAE {metrics['force_mae']:.4f} eV/Å" + (
                f"  σ {metrics['sigma_mean']:.3f} eV/Å" if "sigma_mean" in metrics else "")
            bar.update(task, completed=epoch, info=info)
            if progress and not console.is_terminal and lines.due():
                say("train", f"{label} epoch {epoch}/{max_epochs}: valid F-MAE {metrics['force_mae']:.4f} eV/Å, "
                             f"{row['wall_s']:.1f} s/epoch")
    best = read_payload(best_path)  # CheckpointError if it went missing
    _load_weights(model, best, best_path)
    model.eval()
    meta = {k: v for k, v in best.items() if k != "state_dict"}
    return Fitted(model, meta, train, valid, state)


def _load_weights(model: Trainable, payload: dict[str, Any], path: Path) -> None:
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the model being trained: {exc}") from None
    model.set_element_energies(payload["element_energies"])


def _train_epoch(
    model: Trainable, data: PreparedFrames, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
    shuffle: torch.Generator, epoch: int, objective: Objective, amp: MixedPrecision | None = None,
) -> dict[str, Any]:
    """One pass over the shuffled training frames (the forward under `amp`'s autocast);
    returns the epoch's mean training losses."""
    amp = amp if amp is not None else MixedPrecision(cfg, model)
    model.train()
    order = torch.randperm(len(data.graphs), generator=shuffle).tolist()
    sums = {"train_loss": 0.0, "train_loss_force": 0.0, "train_loss_energy": 0.0}
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        g, e_ref, f_ref = _batch(data, idx)
        with amp.autocast():
            loss, parts, _ = objective.loss(model, g, e_ref, f_ref, cfg, True)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {float(loss)} in epoch {epoch}; lower train.lr "
                f"(now {optimizer.param_groups[0]['lr']:g}) or check the data"
            )
        amp.step(loss, model, optimizer)
        sums["train_loss"] += float(loss.detach()) * len(idx)
        sums["train_loss_force"] += parts["loss_force"] * len(idx)
        sums["train_loss_energy"] += parts["loss_energy"] * len(idx)
    return {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **{k: v / len(order) for k, v in sums.items()}}

