"""The `select` step: choose this generation's configurations to label (docs/selection.md).

`select_generation` pools the walkers' candidate frames (`pool`), resolves `lo`
(configured or adaptive), applies label-noise flags, calls the pure core (`core`) and
writes `select/selected.extxyz` and `select/decisions.csv` (one row per pooled frame with
the reason of its decision). With `selection.scale: calibrated` the bands and the ranking
use the calibrated expected force error instead of raw σ (docs/calibration.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from ase import Atoms

from eip_al.atomic import atomic_path
from eip_al.config import ALConfig, SelectConfig
from eip_al.io import FrameError, read_frames, write_frames
from eip_al.rundir import RunDir, RunDirError, load_valid
from eip_al.schemas import ExplorationSummary, SelectionResult, TrainingResult
from eip_al.select.core import (
    ACCURATE,
    BANDS,
    CANDIDATE,
    FAILED,
    REASONS,
    Decisions,
    SelectionRules,
    adaptive_lo,
    classify_bands,
    select_pool,
    trust_fractions,
)
from eip_al.select.pool import CandidatePool, dataset_frame_ids, pool_candidates, unphysical_counts
from eip_al.stop import convergence
from eip_al.uq import Calibration, calibration_from_meta, label_noise_flags, noise_thresholds

if TYPE_CHECKING:
    from eip_al.calculator import EIPCalculator

log = logging.getLogger(__name__)


class SelectionModel:
    """This generation's trained model as one selection step needs it: the checkpoint is read
    at most once and the calculator built at most once, each only when a rule asks for it
    (adaptive lo, FPS descriptors, the calibration)."""

    def __init__(self, cfg: ALConfig, run: RunDir, gen: int):
        self.run, self.gen, self.device = run, gen, cfg.explore.device
        self.train_path = run.artifact_path(gen, "train")
        self.training = load_valid(self.train_path, TrainingResult)

    @property
    def checkpoint(self) -> Path:
        if self.training is None:
            raise RunDirError(f"{self.train_path}: no valid training result for generation {self.gen}")
        return self.run.abs(self.training.checkpoint)

    @cached_property
    def payload(self) -> dict[str, Any]:
        from eip_al.model.checkpoint import (
            read_payload,  # lazy: torch only when a rule needs the model
        )

        return read_payload(self.checkpoint)

    @cached_property
    def calculator(self) -> EIPCalculator:
        from eip_al.calculator import EIPCalculator
        from eip_al.model.checkpoint import model_from_payload, resolve_device

        model = model_from_payload(self.payload, self.checkpoint).to(resolve_device(self.device))
        return EIPCalculator.from_model(model)

    def calibration(self) -> Calibration | None:
        return calibration_from_meta(self.payload, str(self.checkpoint))


def validation_sigma(model: SelectionModel) -> np.ndarray | None:
    """Configuration σ of the training's validation frames, predicted by this generation's model.

    Returns None (caller falls back to the configured lo) when the model cannot be built
    for want of a module or the dataset has no frame with split == "valid".
    """
    training = model.training
    if training is None:
        raise RunDirError(f"{model.train_path}: no valid training result for generation {model.gen}")
    frames = read_frames(model.run.abs(training.dataset), require_labels=False, require_cell=False)
    valid = [a for a in frames if a.info.get("split") == "valid"]
    if not valid:
        log.warning("%s: no frame with split=valid; using configured lo", training.dataset)
        return None
    try:
        calc = model.calculator
    except ImportError as exc:
        log.warning("adaptive lo unavailable (%s); using configured lo", exc)
        return None
    return np.asarray([float(p["config_uncertainty"]) for p in calc.predict_frames(valid)])


def frame_descriptors(model: SelectionModel, frames: list[Atoms]) -> np.ndarray:
    """Invariant feature vector per frame (model's `descriptor` output) for FPS diversity."""
    try:
        calc = model.calculator
    except ImportError as exc:
        raise RunDirError(f"selection.diversity=fps needs the model calculator: {exc}") from exc
    return np.stack(
        [np.asarray(p["descriptor"], dtype=np.float64) for p in calc.predict_frames(frames)]
    )


def resolve_lo(
    sel: SelectConfig,
    model: SelectionModel,
    valid_sigma_fn: Callable[[SelectionModel], np.ndarray | None] = validation_sigma,
) -> tuple[float, Literal["config", "adaptive"]]:
    """lo and where it came from: the config, or the `lo_quantile` of validation σ."""
    if sel.lo_quantile is None:
        return sel.lo, "config"
    valid = valid_sigma_fn(model)
    if valid is None or len(valid) == 0:
        return sel.lo, "config"
    lo = adaptive_lo(valid, sel.lo_quantile, sel.hi)
    log.info(
        "adaptive lo = %.4g eV/Å (quantile %.2f of %d validation σ)",
        lo,
        sel.lo_quantile,
        len(valid),
    )
    return lo, "adaptive"


def _write_decisions(
    path: Path, pool: CandidatePool, d: Decisions, extra: dict[str, np.ndarray] | None = None
) -> None:
    rank = d.rank
    table = pd.DataFrame(
        {
            "frame_id": pool.key,
            "walker": [pool.walker_names[i] for i in pool.walker.tolist()],
            "kind": pool.kind,
            "step": pool.step,
            "time_fs": pool.time_fs,
            "sigma": pool.sigma,
            "band": np.asarray(BANDS, dtype=object)[d.band],
            "decision": np.where(rank >= 0, "selected", "rejected"),
            "reason": np.asarray(REASONS, dtype=object)[d.reason],
            "rank": rank,
            "detail": pool.detail,
            **(extra or {}),
        }
    )
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _generation_calibration(sel: SelectConfig, model: SelectionModel) -> Calibration | None:
    """This generation's model's calibration (None: none, or no model).

    With `selection.scale: calibrated` a missing training result or calibration is an error.
    """
    calibration, why = None, f"{model.train_path}: no valid training result for generation {model.gen}"
    if model.training is not None:
        try:
            calibration = model.calibration()
            why = f"{model.checkpoint}: the model has no calibration (validation split too small to fit?)"
        except Exception as exc:  # unreadable checkpoint: only fatal when the scale needs it
            why = f"{model.checkpoint}: cannot read the calibration ({exc})"
    if sel.scale == "calibrated" and calibration is None:
        raise RunDirError(f"selection.scale is 'calibrated' but {why}; use scale: raw")
    if calibration is None and model.training is not None:
        log.info("%s", why)
    return calibration


def calibrated_config_uncertainty(frames: Sequence[Atoms], calibration: Calibration, where: str) -> np.ndarray:
    """Per frame mean_i apply(σ_i): the expected mean per-atom force error (eV/Å)."""
    out = np.empty(len(frames))
    for k, atoms in enumerate(frames):
        sig = atoms.arrays.get("uncertainty")
        if sig is None:
            raise FrameError(f"{where}: frame {k} ({atoms.info.get('walker')}, step {atoms.info.get('step')}): "
                             "no per-atom 'uncertainty' array, needed for selection.scale calibrated")
        out[k] = float(np.mean(calibration.apply(np.asarray(sig, dtype=np.float64))))
    return out


def _both_scales(lo: float, hi: float, scale: str, calibration: Calibration | None) -> dict[str, float | None]:
    """lo/hi on both scales: the configured one, and its image (or inverse) through the map."""
    if scale == "calibrated":
        assert calibration is not None
        lo_raw, hi_raw = (float(x) for x in calibration.inverse(np.array([lo, hi])))
        return {"lo_raw": lo_raw, "hi_raw": hi_raw, "lo_calibrated": lo, "hi_calibrated": hi}
    if calibration is None:
        return {"lo_raw": lo, "hi_raw": hi, "lo_calibrated": None, "hi_calibrated": None}
    lo_c, hi_c = (float(x) for x in calibration.apply(np.array([lo, hi])))
    return {"lo_raw": lo, "hi_raw": hi, "lo_calibrated": lo_c, "hi_calibrated": hi_c}


def select_generation(
    cfg: ALConfig,
    run: RunDir,
    gen: int,
    *,
    valid_sigma_fn: Callable[[SelectionModel], np.ndarray | None] = validation_sigma,
    descriptor_fn: Callable[[SelectionModel, list[Atoms]], np.ndarray] = frame_descriptors,
) -> SelectionResult:
    """Select this generation's frames to label; writes selected.extxyz and decisions.csv.

    `selected.extxyz` is always written, empty (0 bytes) when nothing is selected —
    downstream steps check `n_selected` before reading it. The artifact itself is not
    written here: the caller writes it (e.g. with `integrity.run_step`). The generation's
    model is loaded once (`SelectionModel`), and only if a rule needs it; the two function
    arguments exist so tests can inject validation σ and descriptors.
    """
    sel = cfg.selection
    summary_path = run.artifact_path(gen, "explore")
    summary = load_valid(summary_path, ExplorationSummary)
    if summary is None:
        raise RunDirError(f"{summary_path}: no valid exploration summary for generation {gen}")
    pool = pool_candidates(cfg, run, summary)
    manifest = run.dataset_for(gen)
    known = dataset_frame_ids(run.abs(manifest.dataset_extxyz))
    model = SelectionModel(cfg, run, gen)
    training = model.training
    lo, lo_source = resolve_lo(sel, model, valid_sigma_fn)
    calibration = _generation_calibration(sel, model)
    calibrated = (
        calibrated_config_uncertainty(pool.frames, calibration, f"generation {gen} candidates")
        if calibration is not None and pool.frames else np.full(len(pool.frames), np.nan)
    )
    score = calibrated if sel.scale == "calibrated" else pool.sigma
    noise = (noise_thresholds(training.valid, sel.noise_aleatoric_factor, sel.noise_max_epistemic_ratio)
             if training is not None else None)
    noisy = np.zeros(len(pool.frames), dtype=bool)
    if noise is not None and pool.frames:
        noisy = label_noise_flags(pool.aleatoric, pool.sigma, noise.aleatoric_min, noise.max_epistemic_ratio)
        # failed-band frames are extrapolation, not label noise
        noisy &= ~pool.unphysical & (classify_bands(score, lo, sel.hi) != FAILED)
    rules = SelectionRules(
        n_select=sel.n_select,
        lo=lo,
        hi=sel.hi,
        min_step_gap=sel.min_step_gap,
        diversity=sel.diversity,
        fps_pool_factor=sel.fps_pool_factor,
        seed=sel.seed + 1009 * gen,  # different tie-breaks per generation, reproducible
        method=sel.method,
    )

    def features(idx: np.ndarray) -> np.ndarray:
        return descriptor_fn(model, [pool.frames[i] for i in idx.tolist()])

    d = select_pool(
        score,
        pool.walker,
        pool.step,
        pool.key,
        rules,
        unphysical=pool.unphysical,
        dataset_keys=known,
        features=features if sel.diversity == "fps" else None,
        label_noise=noisy,
    )

    out_dir = run.step_dir(gen, "select")
    selected: list[Atoms] = []
    for rank, i in enumerate(d.selected.tolist()):
        atoms = pool.frames[i].copy()  # copy() keeps info and arrays, drops the calculator
        atoms.info["selection_rank"] = rank
        atoms.info.setdefault("generation", gen)
        selected.append(atoms)
    selected_path = write_frames(out_dir / "selected.extxyz", selected)
    decisions_path = out_dir / "decisions.csv"
    _write_decisions(decisions_path, pool, d, {
        "sigma_calibrated": calibrated, "aleatoric": pool.aleatoric, "label_noise": noisy,
    })

    per_walker = {
        name: trust_fractions(d.band[pool.walker == w], pool.unphysical[pool.walker == w])
        for w, name in enumerate(pool.walker_names)
    }
    phys = ~pool.unphysical
    result = SelectionResult(
        generation=gen,
        lo=lo,
        hi=sel.hi,
        lo_source=lo_source,
        n_pool=len(pool.frames),
        n_unphysical=int(pool.unphysical.sum()),
        unphysical_by_reason=unphysical_counts(pool.detail),
        n_accurate=int(np.count_nonzero(phys & (d.band == ACCURATE))),
        n_candidate=int(np.count_nonzero(phys & (d.band == CANDIDATE))),
        n_failed=int(np.count_nonzero(phys & (d.band == FAILED))),
        n_selected=int(d.selected.size),
        n_requested=sel.n_select,
        per_walker=per_walker,
        overall=trust_fractions(d.band, pool.unphysical),
        selected_extxyz=run.rel(selected_path),
        decisions_csv=run.rel(decisions_path),
        n_collapsed_walkers=sum(w.collapsed for w in summary.walkers),
        scale=sel.scale,
        n_label_noise=int(noisy.sum()),
        noise_aleatoric_min=noise.aleatoric_min if noise is not None else None,
        noise_max_epistemic_ratio=noise.max_epistemic_ratio if noise is not None else None,
        **_both_scales(lo, sel.hi, sel.scale, calibration),
    )
    k = sel.converge_generations
    history = [
        load_valid(run.artifact_path(g, "select"), SelectionResult)
        for g in range(max(0, gen - k + 1), gen)
    ]
    converged, why = convergence([*history, result], sel.converge_candidate_fraction, k)
    result.converged, result.converged_reason = converged, why
    log.info(
        "generation %d: pooled %d, candidates %d, selected %d/%d (lo=%.4g %s, hi=%.4g)%s",
        gen,
        result.n_pool,
        result.n_candidate,
        result.n_selected,
        sel.n_select,
        lo,
        lo_source,
        sel.hi,
        " — converged" if converged else "",
    )
    return result
