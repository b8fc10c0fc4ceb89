"""Baselines for the UQ benchmark: plain PaiNN, a PaiNN ensemble and MC-dropout PaiNN.

All three use the eIP model's own backbone (`eip_al.model.painn.PaiNN`), energy readout
shape, per-element reference energies (`fit_element_energies`, train split only), graphs
(`frames_to_graphs`, `collate`) and training schedule (`TrainConfig`: AdamW, lr,
ReduceLROnPlateau, early stopping on the validation loss, gradient clipping at 10), so the
only difference from eIP is the missing evidential head and the loss, the usual MLIP
force-dominated mean squared error (eV, Å):

    L = mean_{i,c} (F_pred,ic − F_ref,ic)²  +  λ_E · mean_g ((E_pred,g − E_ref,g) / N_g)²

with λ_E = `energy_weight` (default 1; MACE's default ratio is 1:100 energy:forces, so
this weights energies more). `train_cfg.loss` (the evidential q, λ, w) is not used.

* plain PaiNN: one such model; no uncertainty.
* ensemble: M models trained alike with seeds seed, seed+1, …; prediction = member mean,
  σ_i = ‖(std_x, std_y, std_z)‖₂ of the member forces on atom i (std with ddof = 1).
* MC-dropout: dropout with probability p after the hidden activation of every message,
  update and readout MLP; off for validation, on at inference; prediction = mean of T
  stochastic passes, σ_i as for the ensemble over the T passes.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from torch import nn

from eip_al.atomic import atomic_write_bytes
from eip_al.config import ModelConfig, TrainConfig
from eip_al.model.checkpoint import resolve_device
from eip_al.model.eip import ModelSpec, fit_element_energies
from eip_al.model.evaluation import frames_to_graphs
from eip_al.model.neighbors import Graph, collate
from eip_al.model.painn import PaiNN

GRAD_CLIP_NORM = 10.0  # as eip_al.train
Prediction = dict[str, np.ndarray | float]


def _with_dropout(mlp: nn.Sequential, p: float) -> nn.Sequential:
    """Linear → act → Dropout(p) → Linear: the same layers with dropout after the activation."""
    first, act, last = mlp
    return nn.Sequential(first, act, nn.Dropout(p), last)


class PlainPaiNN(nn.Module):
    """PaiNN + energy readout (as in EIPModel, without the evidential head); optional dropout."""

    def __init__(self, spec: ModelSpec, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.spec = spec  # frames_to_graphs reads spec.elements and spec.cutoff
        self.dropout = dropout
        nf, hidden = spec.n_features, max(spec.n_features // 2, 1)
        self.backbone = PaiNN(len(spec.elements), nf, spec.n_interactions, spec.cutoff, spec.n_rbf)
        self.readout = nn.Sequential(nn.Linear(nf, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        if dropout > 0:
            for message in self.backbone.messages:
                message.phi = _with_dropout(message.phi, dropout)
            for update in self.backbone.updates:
                update.mlp = _with_dropout(update.mlp, dropout)
            self.readout = _with_dropout(self.readout, dropout)
        self.register_buffer("energy_scale", torch.ones(()))
        self.element_energies = torch.zeros(len(spec.elements), dtype=torch.float64)

    @property
    def dtype(self) -> torch.dtype:
        return self.energy_scale.dtype

    @property
    def device(self) -> torch.device:
        return self.energy_scale.device

    def set_dropout_active(self, active: bool) -> None:
        """Switch only the dropout layers between sampling (True) and identity (False)."""
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.train(active)

    def forward(self, g: Graph, positions: torch.Tensor) -> torch.Tensor:
        """Network energy per graph (without reference energies), shape (G,)."""
        if g.n_graphs == 1:
            shift_vec = g.shifts @ g.cell[0]
        else:
            shift_vec = torch.einsum("ek,ekl->el", g.shifts, g.cell[g.batch[g.edge_i]])
        vectors = positions.index_select(0, g.edge_j) - positions.index_select(0, g.edge_i) + shift_vec
        s, _ = self.backbone(g.species, vectors, g.edge_i, g.edge_j)
        atomic = self.readout(s).squeeze(-1) * self.energy_scale
        return atomic.new_zeros(g.n_graphs).index_add(0, g.batch, atomic)

    def predict(self, g: Graph, create_graph: bool = False) -> dict[str, torch.Tensor]:
        """Total energy (G,) in float64 and forces −∂E/∂R (N, 3)."""
        positions = g.positions.detach().requires_grad_(True)
        energy_net = self.forward(g, positions)
        (grad,) = torch.autograd.grad(energy_net.sum(), positions, create_graph=create_graph)
        ee = self.element_energies.to(g.species.device)
        reference = torch.zeros(g.n_graphs, dtype=torch.float64, device=ee.device).index_add(
            0, g.batch, ee[g.species]
        )
        return {"energy": energy_net.to(torch.float64) + reference, "forces": -grad}


@dataclass
class TrainLog:
    """How a baseline's training went (cached next to its weights)."""

    epochs_run: int
    best_epoch: int
    stopped_reason: str
    best_valid_loss: float
    wall_s: float  # whole call: graph building, all epochs (train + validation)
    cpu_s: float  # process CPU time of the same span (all threads)
    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    epoch_wall_s: list[float] = field(default_factory=list)  # each epoch: training pass + validation
    epoch_cpu_s: list[float] = field(default_factory=list)


@dataclass
class _Data:
    graphs: list[Graph]
    energies: list[torch.Tensor]
    forces: list[torch.Tensor]


def _prepare(frames: Sequence[Atoms], model: PlainPaiNN, where: str) -> _Data:
    graphs = [g.to(model.device, model.dtype) for g in frames_to_graphs(frames, model, where)]
    energies = [torch.tensor(a.get_potential_energy(), dtype=torch.float64, device=model.device) for a in frames]
    forces = [torch.as_tensor(a.get_forces(), dtype=model.dtype, device=model.device) for a in frames]
    return _Data(graphs, energies, forces)


def _batch_loss(model: PlainPaiNN, data: _Data, idx: Sequence[int], energy_weight: float, create_graph: bool) -> torch.Tensor:
    g = collate([data.graphs[k] for k in idx])
    out = model.predict(g, create_graph=create_graph)
    f_ref = torch.cat([data.forces[k] for k in idx])
    e_ref = torch.stack([data.energies[k] for k in idx])
    n_atoms = torch.bincount(g.batch, minlength=g.n_graphs).to(e_ref)
    e_loss = (((out["energy"] - e_ref) / n_atoms) ** 2).mean()
    return ((out["forces"] - f_ref) ** 2).mean() + energy_weight * e_loss


def _fingerprint(train: Sequence[Atoms], valid: Sequence[Atoms], model_cfg: ModelConfig,
                 train_cfg: TrainConfig, dropout: float, energy_weight: float) -> str:
    h = hashlib.sha256()
    for frames in (train, valid):
        for a in frames:
            h.update(np.ascontiguousarray(a.positions).tobytes())
            h.update(np.ascontiguousarray(a.get_forces()).tobytes())
            h.update(np.float64(a.get_potential_energy()).tobytes())
    h.update(model_cfg.model_dump_json().encode())
    h.update(train_cfg.model_dump_json(exclude={"device", "loss"}).encode())
    h.update(repr((dropout, energy_weight)).encode())
    return h.hexdigest()


def new_plain_model(train: Sequence[Atoms], model_cfg: ModelConfig, dropout: float, seed: int) -> PlainPaiNN:
    """Seeded fresh model; energy scale = RMS training force, reference energies fit on `train`."""
    elements = sorted({int(z) for a in train for z in a.numbers})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PlainPaiNN(ModelSpec.from_config(model_cfg, elements), dropout).to(getattr(torch, model_cfg.dtype))
    rms = float(np.sqrt(np.mean(np.concatenate([a.get_forces().ravel() for a in train]) ** 2)))
    model.energy_scale.fill_(rms if rms > 0 else 1.0)
    model.element_energies = torch.tensor(fit_element_energies(train, model.spec.elements), dtype=torch.float64)
    return model


def _load_cached(path: Path, fingerprint: str, model: PlainPaiNN) -> TrainLog | None:
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("fingerprint") != fingerprint:
        return None
    model.load_state_dict(payload["state_dict"])
    return TrainLog(**json.loads(payload["log"]))


def train_plain(
    train: Sequence[Atoms],
    valid: Sequence[Atoms],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    dropout: float = 0.0,
    cache: Path | None = None,
    energy_weight: float = 1.0,
) -> tuple[PlainPaiNN, TrainLog]:
    """Train one plain (or dropout) PaiNN; returns the best-validation model and its log.

    With `cache`, a finished training of the same frames and settings is loaded from that
    file instead of redone (its log keeps the original timings).
    """
    if not train or not valid:
        raise ValueError("need at least one train and one valid frame")
    fingerprint = _fingerprint(train, valid, model_cfg, train_cfg, dropout, energy_weight)
    device = resolve_device(train_cfg.device)
    model = new_plain_model(train, model_cfg, dropout, train_cfg.seed).to(device)
    if cache is not None and (log := _load_cached(Path(cache), fingerprint, model)) is not None:
        model.eval()
        return model, log
    t0, c0 = time.perf_counter(), time.process_time()
    data, vdata = _prepare(train, model, "train"), _prepare(valid, model, "valid")
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=train_cfg.lr_factor, patience=train_cfg.lr_patience
    )
    shuffle = torch.Generator().manual_seed(train_cfg.seed)
    w, bs = energy_weight, train_cfg.batch_size
    best_state, best_loss, best_epoch, bad = None, math.inf, 0, 0
    log = TrainLog(0, 0, "max_epochs", math.inf, 0.0, 0.0)
    for epoch in range(1, train_cfg.epochs + 1):
        t_epoch, c_epoch = time.perf_counter(), time.process_time()
        model.train()
        order = torch.randperm(len(data.graphs), generator=shuffle).tolist()
        total = 0.0
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            loss = _batch_loss(model, data, idx, w, create_graph=True)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"baseline loss became {float(loss)} in epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        vloss = sum(
            float(_batch_loss(model, vdata, range(s, min(s + bs, len(valid))), w, create_graph=False).detach())
            * (min(s + bs, len(valid)) - s)
            for s in range(0, len(valid), bs)
        ) / len(valid)
        scheduler.step(vloss)
        log.train_loss.append(total / len(order))
        log.valid_loss.append(vloss)
        log.epoch_wall_s.append(time.perf_counter() - t_epoch)
        log.epoch_cpu_s.append(time.process_time() - c_epoch)
        log.epochs_run = epoch
        if vloss < best_loss:
            best_state, best_loss, best_epoch, bad = copy.deepcopy(model.state_dict()), vloss, epoch, 0
        else:
            bad += 1
        if bad >= train_cfg.early_stopping_patience:
            log.stopped_reason = "early_stopping"
            break
        if train_cfg.max_time_s is not None and time.perf_counter() - t0 >= train_cfg.max_time_s:
            log.stopped_reason = "time_limit"
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    log.best_epoch, log.best_valid_loss = best_epoch, best_loss
    log.wall_s, log.cpu_s = time.perf_counter() - t0, time.process_time() - c0
    if cache is not None:
        buf = io.BytesIO()
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"fingerprint": fingerprint, "state_dict": state, "log": json.dumps(asdict(log))}, buf)
        atomic_write_bytes(Path(cache), buf.getvalue())
    return model, log


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
        cache = None if cache_dir is None else Path(cache_dir) / f"member-{k}.pt"
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
    """Member-mean energies and forces, σ_i from the member spread."""
    out: list[Prediction] = []
    for m in models:
        m.eval()
    for g in _batches(graphs, batch_size):
        runs = [_passes(m, g) for m in models]
        f = np.stack([r[1] for r in runs])
        out += _split(g, np.mean([r[0] for r in runs], axis=0), f.mean(axis=0), spread_sigma(f))
    return out


def predict_mc_dropout(
    model: PlainPaiNN, graphs: Sequence[Graph], n_samples: int = 20, batch_size: int = 8, seed: int = 0
) -> list[Prediction]:
    """Mean of `n_samples` stochastic passes (dropout on); σ_i from their spread. Seeded."""
    if model.dropout <= 0:
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

