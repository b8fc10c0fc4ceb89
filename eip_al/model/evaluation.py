"""Batched prediction over many frames and the evaluation metrics of docs/eip-method §4.

Shared by training (validation after each epoch), `EIPCalculator.predict_frames`,
`eip-al predict` and `eip-al evaluate`, so every number with one name is computed once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from ase import Atoms
from rich.progress import Progress

from eip_al.metrics import atom_force_error, force_errors
from eip_al.model.eip import PlainPaiNN
from eip_al.model.neighbors import Graph, SpeciesMap, collate, frame_graph
from eip_al.model.sources import UncertaintySource
from eip_al.schemas import ValidationMetrics
from eip_al.uq import sigma_error_scores

PREDICTION_KEYS = (
    "energy",
    "forces",
    "uncertainty",
    "uncertainty_components",
    "aleatoric_components",
    "config_uncertainty",
    "descriptor",
)


def frames_to_graphs(frames: Sequence[Atoms], model: PlainPaiNN | UncertaintySource, where: str = "frames") -> list[Graph]:
    """Graphs (CPU, float64) of `frames`; errors name the frame index."""
    species = SpeciesMap(model.spec.elements)
    return [frame_graph(a, species, model.spec.cutoff, f"{where}: frame {k}") for k, a in enumerate(frames)]


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def split_outputs(out: dict[str, torch.Tensor], g: Graph) -> list[dict[str, np.ndarray | float]]:
    """Per-frame numpy results (calculator keys) of one predicted batch."""
    counts = torch.bincount(g.batch, minlength=g.n_graphs).tolist()
    per_atom = {
        "forces": out["forces"],
        "uncertainty": out["sigma_atom"],
        "uncertainty_components": out["sigma_components"],
        "aleatoric_components": out["aleatoric_components"],
    }
    split = {k: torch.split(v.detach().to("cpu", torch.float64), counts) for k, v in per_atom.items()}
    energy = out["energy"].detach().cpu().tolist()
    sigma = out["sigma_config"].detach().cpu().tolist()
    desc = out["descriptor"].detach().to("cpu", torch.float64).numpy()
    results = []
    for k in range(g.n_graphs):
        r: dict[str, np.ndarray | float] = {key: split[key][k].numpy() for key in per_atom}
        r["energy"] = float(energy[k])
        r["config_uncertainty"] = float(sigma[k])
        r["descriptor"] = desc[k]
        results.append(r)
    return results


def predict_graphs(
    model: UncertaintySource,
    graphs: Sequence[Graph],
    batch_size: int = 8,
    progress: bool = False,
    description: str = "predicting",
) -> list[dict[str, np.ndarray | float]]:
    """Predict every graph in batches of `batch_size` frames; parameters get no gradients."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    results: list[dict[str, np.ndarray | float]] = []
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(description, total=len(graphs))
            for chunk in _chunks(len(graphs), batch_size):
                g = collate([graphs[k] for k in chunk]).to(model.device, model.dtype)
                with torch.enable_grad():
                    out = model.predict(g)
                results += split_outputs(out, g)
                bar.advance(task, len(chunk))
    finally:
        model.train(was_training)
    return results


def evaluation_metrics(
    frames: Sequence[Atoms], predictions: Sequence[dict[str, np.ndarray | float]]
) -> ValidationMetrics:
    """Accuracy and uncertainty-quality metrics of predictions against labelled frames (§4)."""
    if len(frames) != len(predictions) or not frames:
        raise ValueError(f"need equally many frames and predictions (got {len(frames)}, {len(predictions)})")
    f_ref = np.concatenate([a.get_forces() for a in frames])
    f_pred = np.concatenate([np.asarray(p["forces"]) for p in predictions])
    sig_atom = np.concatenate([np.asarray(p["uncertainty"]) for p in predictions])
    alea_atom = np.concatenate(
        [np.linalg.norm(np.asarray(p["aleatoric_components"]), axis=-1) for p in predictions]
    )
    err_atom = atom_force_error(f_pred, f_ref)
    n_atoms = np.array([len(a) for a in frames])
    e_err = np.array(
        [abs(float(p["energy"]) - a.get_potential_energy()) for a, p in zip(frames, predictions, strict=True)]
    )
    err_config = np.array([e.mean() for e in np.split(err_atom, np.cumsum(n_atoms)[:-1])])
    sig_config = np.array([float(p["config_uncertainty"]) for p in predictions])
    fe = force_errors(f_pred, f_ref)
    cal_atom = (np.concatenate([np.asarray(p["calibrated_uncertainty"]) for p in predictions])
                if all("calibrated_uncertainty" in p for p in predictions) else None)
    scores = sigma_error_scores(sig_atom, err_atom, sig_config, err_config, cal_atom)
    return ValidationMetrics(
        n_frames=len(frames),
        energy_mae_per_atom=float(np.mean(e_err / n_atoms)),
        force_mae=fe["force_mae"],
        force_rmse=fe["force_rmse"],
        sigma_mean=float(sig_atom.mean()),
        aleatoric_mean=float(alea_atom.mean()),
        sigma_median=float(np.median(sig_atom)),
        aleatoric_median=float(np.median(alea_atom)),
        epistemic_share_p90=_share_p90(sig_atom, alea_atom),
        **scores,
    )


def _share_p90(sigma: np.ndarray, aleatoric: np.ndarray) -> float | None:
    """90th percentile of per-atom epistemic/aleatoric σ (None without aleatoric output)."""
    ok = (aleatoric > 0) & np.isfinite(sigma) & np.isfinite(aleatoric)
    return float(np.percentile(sigma[ok] / aleatoric[ok], 90)) if ok.any() else None
