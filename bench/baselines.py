"""Baselines for the UQ benchmark: plain PaiNN, a PaiNN ensemble and MC-dropout PaiNN.

All three are `eip_al.model.eip.PlainPaiNN` (the eIP model without its evidential head: same
backbone, energy readout, per-element reference energies fit on the train split, graphs) and
train in eip_al's one training loop (`eip_al.fit.fit`: AdamW, ReduceLROnPlateau, early
stopping on the validation loss, gradient clipping at 10, resume files), so the only
difference from eIP is the missing head and the loss (`eip_al.fit.mse_objective`), the usual
MLIP force-dominated mean squared error (eV, Å):

    L = mean_{i,c} (F_pred,ic − F_ref,ic)²  +  λ_E · mean_g ((E_pred,g − E_ref,g) / N_g)²

with λ_E = `energy_weight` (default 1; MACE's default ratio is 1:100 energy:forces, so
this weights energies more). `train_cfg.loss` (the evidential q, λ, w) is not used.

* plain PaiNN: one such model; no uncertainty.
* ensemble: M models trained alike with seeds seed, seed+1, …; predicted by
  `eip_al.model.ensemble.EnsembleModel` (the real loop's `model.uncertainty: ensemble`):
  member mean, σ_i = ‖(std_x, std_y, std_z)‖₂ of the member forces on atom i (ddof = 1).
* MC-dropout: dropout with probability p after the hidden activation of every message,
  update and readout MLP; off for validation, on at inference; prediction = mean of T
  stochastic passes, σ_i as for the ensemble over the T passes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from torch import nn

from eip_al.config import ModelConfig, TrainConfig
from eip_al.fit import fit, job_fingerprint, mse_objective
from eip_al.fit import new_plain_model as new_member
from eip_al.model.checkpoint import resolve_device
from eip_al.model.eip import ModelSpec, PlainPaiNN
from eip_al.model.ensemble import EnsembleModel
from eip_al.model.evaluation import predict_graphs
from eip_al.model.neighbors import Graph, collate

Prediction = dict[str, np.ndarray | float]


def _with_dropout(mlp: nn.Sequential, p: float) -> nn.Sequential:
    """Linear → act → Dropout(p) → Linear: the same layers with dropout after the activation."""
    first, act, last = mlp
    return nn.Sequential(first, act, nn.Dropout(p), last)


class DropoutPaiNN(PlainPaiNN):
    """`PlainPaiNN` with dropout after the hidden activation of every message, update and readout MLP."""

    def __init__(self, spec: ModelSpec, dropout: float):
        super().__init__(spec)
        if not 0.0 < dropout < 1.0:
            raise ValueError(f"dropout must be in (0, 1), got {dropout}")
        self.dropout = dropout
        for message in self.backbone.messages:
            message.phi = _with_dropout(message.phi, dropout)
        for update in self.backbone.updates:
            update.mlp = _with_dropout(update.mlp, dropout)
        self.readout = _with_dropout(self.readout, dropout)

    def set_dropout_active(self, active: bool) -> None:
        """Switch only the dropout layers between sampling (True) and identity (False)."""
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.train(active)


@dataclass
class TrainLog:
    """How a baseline's training went (from the loop's state, so a cached one keeps its timings)."""

    epochs_run: int
    best_epoch: int
    stopped_reason: str
    best_valid_loss: float
    wall_s: float  # all epochs (training pass + validation)
    cpu_s: float  # process CPU time of the same epochs (all threads)
    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    epoch_wall_s: list[float] = field(default_factory=list)  # each epoch: training pass + validation
    epoch_cpu_s: list[float] = field(default_factory=list)


def _builder(train: Sequence[Atoms], model_cfg: ModelConfig, dropout: float):
    if dropout < 0 or dropout >= 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    make = PlainPaiNN if dropout == 0 else (lambda spec: DropoutPaiNN(spec, dropout))
    return lambda: new_member(train, model_cfg, make=make)


def new_plain_model(train: Sequence[Atoms], model_cfg: ModelConfig, dropout: float, seed: int) -> PlainPaiNN:
    """Seeded fresh model; energy scale = RMS training force, reference energies fit on `train`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _builder(train, model_cfg, dropout)()


def train_plain(
    train: Sequence[Atoms],
    valid: Sequence[Atoms],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    dropout: float = 0.0,
    cache: Path | None = None,
    energy_weight: float = 1.0,
) -> tuple[PlainPaiNN, TrainLog]:
    """Train one plain (or dropout) PaiNN with the core loop (`eip_al.fit.fit`, MSE objective);
    returns the best-validation model and its log.

    With `cache` (a directory: the loop's model.pt, last.pt, metrics.csv), a finished
    training of the same frames and settings is loaded from it instead of redone.
    """
    if not train or not valid:
        raise ValueError("need at least one train and one valid frame")
    objective = mse_objective(energy_weight)
    device = resolve_device(train_cfg.device)
    build = _builder(train, model_cfg, dropout)
    fingerprint = job_fingerprint(train, valid, model_cfg, train_cfg, None, tag=f"{objective.name} dropout={dropout!r}")
    with tempfile.TemporaryDirectory() as tmp:
        fitted = fit(lambda: build().to(device), train, valid, objective, train_cfg,
                     Path(cache) if cache is not None else Path(tmp), fingerprint, progress=False, label="baseline")
    state, history = fitted.state, fitted.state["history"]
    log = TrainLog(
        epochs_run=int(state["epoch"]), best_epoch=int(state["best_epoch"]), stopped_reason=state["stopped_reason"],
        best_valid_loss=float(state["best_loss"]),
        wall_s=sum(r["wall_s"] for r in history), cpu_s=sum(r["cpu_s"] for r in history),
        train_loss=[r["train_loss"] for r in history], valid_loss=[r["valid_loss"] for r in history],
        epoch_wall_s=[r["wall_s"] for r in history], epoch_cpu_s=[r["cpu_s"] for r in history],
    )
    return fitted.model, log


def train_ensemble(
    train: Sequence[Atoms],
    valid: Sequence[Atoms],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    n_members: int = 4,
    cache_dir: Path | None = None,
    energy_weight: float = 1.0,
) -> tuple[list[PlainPaiNN], list[TrainLog]]:
    """`n_members` plain models differing only in seed (initial weights and batch order)."""
    models, logs = [], []
    for k in range(n_members):
        cfg = train_cfg.model_copy(update={"seed": train_cfg.seed + k})
        cache = None if cache_dir is None else Path(cache_dir) / f"member-{k}"
        model, log = train_plain(train, valid, model_cfg, cfg, cache=cache, energy_weight=energy_weight)
        models.append(model)
        logs.append(log)
    return models, logs


# ----------------------------------------------------------------------------- prediction
def _batches(graphs: Sequence[Graph], batch_size: int):
    for start in range(0, len(graphs), batch_size):
        chunk = graphs[start : start + batch_size]
        yield collate(chunk)


def _passes(model: PlainPaiNN, g: Graph) -> tuple[np.ndarray, np.ndarray]:
    g = g.to(model.device, model.dtype)
    with torch.enable_grad():
        out = model.predict(g)
    return out["energy"].detach().cpu().numpy(), out["forces"].detach().to("cpu", torch.float64).numpy()


def _split(g: Graph, energy: np.ndarray, forces: np.ndarray, sigma: np.ndarray | None) -> list[Prediction]:
    counts = np.bincount(g.batch.numpy(), minlength=g.n_graphs)
    cuts = np.cumsum(counts)[:-1]
    out: list[Prediction] = []
    for k, f in enumerate(np.split(forces, cuts)):
        p: Prediction = {"energy": float(energy[k]), "forces": f}
        if sigma is not None:
            s = np.split(sigma, cuts)[k]
            p["uncertainty"] = s
            p["config_uncertainty"] = float(s.mean())
        out.append(p)
    return out


def spread_sigma(force_samples: np.ndarray) -> np.ndarray:
    """Per-atom σ_i = ‖per-component std‖₂ over samples; input (S, N, 3), S ≥ 2, output (N,)."""
    if force_samples.ndim != 3 or force_samples.shape[0] < 2:
        raise ValueError(f"need (S>=2, N, 3) force samples, got shape {force_samples.shape}")
    return np.linalg.norm(force_samples.std(axis=0, ddof=1), axis=-1)


def predict_plain(model: PlainPaiNN, graphs: Sequence[Graph], batch_size: int = 8) -> list[Prediction]:
    """Deterministic energies and forces (dropout off)."""
    model.eval()
    out: list[Prediction] = []
    for g in _batches(graphs, batch_size):
        e, f = _passes(model, g)
        out += _split(g, e, f, None)
    return out


def predict_ensemble(models: Sequence[PlainPaiNN], graphs: Sequence[Graph], batch_size: int = 8) -> list[Prediction]:
    """Member-mean energies and forces, σ_i from the member spread (`EnsembleModel`, as in the loop)."""
    return predict_graphs(EnsembleModel(models), graphs, batch_size=batch_size)


def predict_mc_dropout(
    model: PlainPaiNN, graphs: Sequence[Graph], n_samples: int = 20, batch_size: int = 8, seed: int = 0
) -> list[Prediction]:
    """Mean of `n_samples` stochastic passes (dropout on); σ_i from their spread. Seeded."""
    if not isinstance(model, DropoutPaiNN):
        raise ValueError("MC-dropout needs a model built with dropout > 0")
    model.eval()
    model.set_dropout_active(True)
    out: list[Prediction] = []
    try:
        with torch.random.fork_rng(devices=None if model.device.type == "cuda" else []):
            torch.manual_seed(seed)
            for g in _batches(graphs, batch_size):
                runs = [_passes(model, g) for _ in range(n_samples)]
                f = np.stack([r[1] for r in runs])
                out += _split(g, np.mean([r[0] for r in runs], axis=0), f.mean(axis=0), spread_sigma(f))
    finally:
        model.set_dropout_active(False)
    return out

