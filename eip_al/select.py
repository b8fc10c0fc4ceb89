"""The `select` step: choose the configurations to label by evidential uncertainty.

Two layers (docs/selection.md):

* a pure, vectorised core on arrays — `classify_bands` (DP-GEN trust bands),
  `select_pool` (dedup, step-gap decorrelation, budget, optional diversity) and
  `farthest_point_sampling` — so 10^6 candidates are decided in seconds and every rule
  is testable on constructed arrays;
* the generation step `select_generation`, which pools the walkers' candidate frames,
  flags unphysical ones, resolves `lo` (configured or adaptive), calls the core and writes
  `select/selected.extxyz` and `select/decisions.csv` (one row per pooled frame with
  the reason of its decision).

Every pooled frame gets exactly one reason; the first rule that applies wins, in this
order: unphysical → accurate / failed_band → label_noise → duplicate_dataset →
duplicate_pool → step_gap → over_budget → fps_not_chosen; otherwise it is selected.
With `selection.scale: calibrated` the bands and the ranking use the calibrated
expected force error instead of raw σ (docs/calibration.md).
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from ase import Atoms
from ase.io.extxyz import key_val_str_to_dict

from eip_al.atomic import atomic_path
from eip_al.calibrate import (
    Calibration,
    frame_aleatoric,
    label_noise_flags,
    load_calibration,
    noise_thresholds,
)
from eip_al.config import ALConfig, CollapseConfig
from eip_al.io import FrameError, frame_id, read_frames, write_frames
from eip_al.rundir import RunDir, RunDirError, load_valid
from eip_al.schemas import ExplorationSummary, SelectionResult, TrainingResult, TrustFractions
from eip_al.screening import PairScreen, screen_for_run

log = logging.getLogger(__name__)

BANDS: tuple[str, ...] = ("accurate", "candidate", "failed")
ACCURATE, CANDIDATE, FAILED = 0, 1, 2

REASONS: tuple[str, ...] = (
    "selected",
    "unphysical",
    "accurate",
    "failed_band",
    "duplicate_dataset",
    "duplicate_pool",
    "step_gap",
    "over_budget",
    "fps_not_chosen",
    "label_noise",  # appended last: existing codes keep their values
)
R = {name: code for code, name in enumerate(REASONS)}

# An adaptive lo is clamped to at most this fraction of hi so a candidate band remains.
LO_MAX_FRACTION = 0.5

FeatureSource = np.ndarray | Callable[[np.ndarray], np.ndarray]


# ============================================================================ core
def classify_bands(sigma: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Trust band of each σ: accurate (σ < lo), candidate (lo ≤ σ < hi), failed (σ ≥ hi).

    Non-finite σ is `failed`. Returns int8 codes indexing `BANDS`.
    """
    if not 0 < lo < hi:
        raise ValueError(f"trust band needs 0 < lo < hi (got lo={lo}, hi={hi})")
    sigma = np.asarray(sigma, dtype=float)
    band = np.full(sigma.shape, CANDIDATE, dtype=np.int8)
    band[sigma < lo] = ACCURATE
    band[~(sigma < hi)] = FAILED  # also catches NaN
    return band


def farthest_point_sampling(features: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Greedy σ-weighted farthest-point sampling: indices of `n` rows in pick order.

    Starts from the largest weight, then repeatedly picks the row maximising
    weight × (Euclidean distance to its nearest pick), so picks are both uncertain and
    spread out in feature space. Multiplying (not adding) makes the result independent
    of the units of either factor.
    """
    x = np.asarray(features, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if x.ndim != 2 or w.shape != (x.shape[0],):
        raise ValueError(f"features must be (n, d) and weights (n,); got {x.shape} and {w.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(w))):
        raise ValueError("features and weights must be finite")
    n = min(int(n), x.shape[0])
    picked = np.empty(n, dtype=np.int64)
    if n == 0:
        return picked
    nearest = np.full(x.shape[0], np.inf)
    chosen = np.zeros(x.shape[0], dtype=bool)
    i = int(np.argmax(w))
    for t in range(n):
        if t:
            score = w * nearest
            score[chosen] = -np.inf
            i = int(np.argmax(score))
        picked[t] = i
        chosen[i] = True
        diff = x - x[i]
        np.minimum(nearest, np.sqrt(np.einsum("ij,ij->i", diff, diff)), out=nearest)
    return picked


@dataclass(frozen=True)
class SelectionRules:
    """The knobs of `select_pool` (mirrors `SelectConfig`, with lo already resolved)."""

    n_select: int
    lo: float
    hi: float
    min_step_gap: int = 0
    diversity: Literal["none", "fps"] = "none"
    fps_pool_factor: int = 10
    seed: int = 0
    method: Literal["sigma", "random"] = "sigma"


@dataclass(frozen=True)
class Decisions:
    """Outcome of `select_pool` for every pooled frame."""

    band: np.ndarray  # int8 code into BANDS, per frame
    reason: np.ndarray  # int8 code into REASONS, per frame
    selected: np.ndarray  # frame indices of the picks, in rank order

    @property
    def rank(self) -> np.ndarray:
        """Selection rank per frame (-1 when not selected)."""
        rank = np.full(self.reason.shape, -1, dtype=np.int64)
        rank[self.selected] = np.arange(self.selected.size)
        return rank

    def count(self, reason: str) -> int:
        return int(np.count_nonzero(self.reason == R[reason]))


def _shortlist(
    order: np.ndarray,
    walker: np.ndarray,
    step: np.ndarray,
    key: np.ndarray,
    min_step_gap: int,
    limit: int,
    reason: np.ndarray,
) -> np.ndarray:
    """Walk candidates in `order`, keep up to `limit` that pass dedup and the step gap.

    Rejections are written into `reason`. Sequential by nature (each pick constrains the
    next), but only until `limit` picks are made.
    """
    picked_keys: set = set()
    picked_steps: dict[int, list[int]] = {}
    kept: list[int] = []
    chunk = max(4096, 2 * limit)  # convert to Python lists lazily: most frames are never visited
    for start in range(0, order.size, chunk):
        part = order[start : start + chunk]
        walkers, steps, keys = walker[part].tolist(), step[part].tolist(), key[part].tolist()
        for pos, i in enumerate(part.tolist()):
            if len(kept) >= limit:
                reason[order[start + pos :]] = R["over_budget"]
                return np.asarray(kept, dtype=np.int64)
            k = keys[pos]
            if k in picked_keys:
                reason[i] = R["duplicate_pool"]
                continue
            if min_step_gap > 0:
                taken = picked_steps.setdefault(walkers[pos], [])
                s = steps[pos]
                j = bisect_left(taken, s)
                if (j < len(taken) and taken[j] - s < min_step_gap) or (
                    j > 0 and s - taken[j - 1] < min_step_gap
                ):
                    reason[i] = R["step_gap"]
                    continue
                insort(taken, s)
            picked_keys.add(k)
            kept.append(i)
    return np.asarray(kept, dtype=np.int64)


def select_pool(
    sigma: np.ndarray,
    walker: np.ndarray,
    step: np.ndarray,
    key: np.ndarray,
    rules: SelectionRules,
    *,
    unphysical: np.ndarray | None = None,
    dataset_keys: Collection | None = None,
    features: FeatureSource | None = None,
    label_noise: np.ndarray | None = None,
) -> Decisions:
    """Decide, for every pooled frame, whether it is selected and why (pure, vectorised).

    sigma: configuration σ (eV/Å); walker: integer walker index; step: MD step of the
    frame within its walker; key: structure hash (any hashable dtype, e.g. frame ids);
    unphysical: frames to drop first; dataset_keys: hashes already in the dataset;
    features: (n, d) array or a function from frame indices to their (m, d) features,
    needed only for diversity="fps" (called only on the shortlist, so expensive
    descriptors are computed for few frames); label_noise: frames flagged by
    `eip_al.calibrate.label_noise_flags` — candidates among them are not selected.

    Candidates (lo ≤ σ < hi) are ranked by descending σ (ties broken by a permutation
    seeded with `rules.seed`); a candidate is skipped if its hash is in the dataset or
    was already kept, or if a kept frame of the same walker lies fewer than
    `min_step_gap` steps away. Without diversity the first `n_select` kept frames are
    selected; with "fps", up to `fps_pool_factor * n_select` kept frames form a
    shortlist from which σ-weighted farthest-point sampling picks `n_select`.

    With `rules.method == "random"` σ decides nothing: every physical frame is a
    candidate (no band or label-noise rejection) and the order is the seeded permutation
    alone; dedup, step gap and the budget still apply (the random baseline).
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    n = sigma.shape[0]
    walker, step, key = np.asarray(walker), np.asarray(step), np.asarray(key)
    for name, arr in (("walker", walker), ("step", step), ("key", key)):
        if arr.shape != (n,):
            raise ValueError(f"{name} has shape {arr.shape}, expected ({n},) like sigma")
    unphys = np.zeros(n, dtype=bool) if unphysical is None else np.asarray(unphysical, dtype=bool)
    if unphys.shape != (n,):
        raise ValueError(f"unphysical has shape {unphys.shape}, expected ({n},)")
    if rules.diversity == "fps" and features is None:
        raise ValueError("diversity='fps' needs features")

    band = classify_bands(sigma, rules.lo, rules.hi)
    by_sigma = rules.method == "sigma"
    reason = np.full(n, R["selected"], dtype=np.int8)
    if by_sigma:
        reason[band == ACCURATE] = R["accurate"]
        reason[band == FAILED] = R["failed_band"]
    reason[unphys] = R["unphysical"]
    if label_noise is not None and by_sigma:
        noisy = np.asarray(label_noise, dtype=bool)
        if noisy.shape != (n,):
            raise ValueError(f"label_noise has shape {noisy.shape}, expected ({n},)")
        reason[noisy & (reason == R["selected"])] = R["label_noise"]

    cand = np.flatnonzero(reason == R["selected"])
    if dataset_keys is not None and len(dataset_keys) and cand.size:
        known = dataset_keys if isinstance(dataset_keys, set | frozenset) else set(dataset_keys)
        in_data = np.fromiter((k in known for k in key[cand].tolist()), dtype=bool, count=cand.size)
        reason[cand[in_data]] = R["duplicate_dataset"]
        cand = cand[~in_data]

    rng = np.random.default_rng(rules.seed)
    cand = cand[rng.permutation(cand.size)]
    order = cand[np.argsort(-sigma[cand], kind="stable")] if by_sigma else cand

    limit = rules.n_select * (rules.fps_pool_factor if rules.diversity == "fps" else 1)
    kept = _shortlist(order, walker, step, key, rules.min_step_gap, limit, reason)

    if rules.diversity == "fps" and kept.size > rules.n_select:
        feats = features(kept) if callable(features) else np.asarray(features)[kept]
        feats = np.asarray(feats, dtype=np.float64)
        if feats.shape[0] != kept.size:
            raise ValueError(f"features gave {feats.shape[0]} rows for {kept.size} frames")
        picks = farthest_point_sampling(feats, sigma[kept], rules.n_select)
        selected = kept[picks]
        not_chosen = np.ones(kept.size, dtype=bool)
        not_chosen[picks] = False
        reason[kept[not_chosen]] = R["fps_not_chosen"]
    else:
        selected = kept
    return Decisions(band=band, reason=reason, selected=selected)


def trust_fractions(band: np.ndarray, unphysical: np.ndarray) -> TrustFractions:
    """Fractions of frames per band among all `n` pooled frames (the four sum to 1).

    Unphysical frames count only as unphysical, whatever their σ band.
    """
    n = int(band.size)
    if n == 0:
        return TrustFractions(n=0, accurate=0.0, candidate=0.0, failed=0.0, unphysical=0.0)
    phys = ~np.asarray(unphysical, dtype=bool)
    return TrustFractions(
        n=n,
        accurate=float(np.count_nonzero(phys & (band == ACCURATE)) / n),
        candidate=float(np.count_nonzero(phys & (band == CANDIDATE)) / n),
        failed=float(np.count_nonzero(phys & (band == FAILED)) / n),
        unphysical=float(np.count_nonzero(~phys) / n),
    )


def adaptive_lo(valid_sigma: np.ndarray, quantile: float, hi: float) -> float:
    """lo = `quantile` of the validation-set configuration σ, clamped to ≤ LO_MAX_FRACTION·hi.

    The model's σ on held-out data it fits well is what "accurate" looks like; frames
    above that quantile are less familiar. The clamp keeps a candidate band of at least
    [hi/2, hi) when the model is uncertain even on its validation set.
    """
    s = np.asarray(valid_sigma, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("adaptive lo needs at least one validation σ")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("validation σ must be finite and positive")
    lo = float(np.quantile(s, quantile))
    return min(lo, LO_MAX_FRACTION * hi)


# ============================================================================ convergence
def _generation_quiet(res: SelectionResult, limit: float) -> tuple[bool, str]:
    """Whether one generation satisfies the convergence condition, and its numbers."""
    o = res.overall
    text = (
        f"gen {res.generation}: candidate {o.candidate:.3f}, failed+unphysical "
        f"{o.failed + o.unphysical:.3f}, n={o.n}, collapsed walkers {res.n_collapsed_walkers}"
    )
    ok = (
        o.n > 0
        and res.n_collapsed_walkers == 0
        and o.candidate < limit
        and o.failed + o.unphysical < limit
    )
    return ok, text


def convergence(
    history: Sequence[SelectionResult | None], limit: float, k: int
) -> tuple[bool, str | None]:
    """Convergence signal over the last `k` generations (`history` ends with the current one).

    Each of them must exist, have pooled frames, no collapsed walker, a candidate
    fraction below `limit` and a failed + unphysical fraction below `limit` (low
    candidate fraction because exploration blew up is not convergence). Returns
    (converged, reason with the numbers when converged).
    """
    window = list(history)[-k:]
    if len(window) < k or any(r is None for r in window):
        return False, None
    checks = [_generation_quiet(r, limit) for r in window]  # type: ignore[arg-type]
    if not all(ok for ok, _ in checks):
        return False, None
    detail = "; ".join(text for _, text in checks)
    return True, f"{k} consecutive generation(s) below candidate fraction {limit}: {detail}"


# ============================================================================ generation step
@dataclass
class CandidatePool:
    """All candidate frames of one generation, with the arrays `select_pool` needs."""

    frames: list[Atoms]
    walker_names: list[str]  # index → walker name
    walker: np.ndarray  # walker index per frame
    kind: list[str]
    step: np.ndarray
    time_fs: np.ndarray
    sigma: np.ndarray
    key: np.ndarray  # frame ids (str)
    unphysical: np.ndarray
    detail: list[str]  # why a frame is unphysical ("" otherwise)
    aleatoric: np.ndarray | None = None  # mean per-atom aleatoric σ per frame (NaN: no array)


def _as_bool(value: object, where: str) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "t", "false", "f"):
        return value.strip().lower() in ("true", "t")
    raise FrameError(f"{where}: info 'unphysical' must be a boolean, got {value!r}")


def unphysical_reason(atoms: Atoms, collapse: CollapseConfig, screen: PairScreen | None = None) -> str | None:
    """Why a frame is physically implausible (``"unphysical: O-O 1.513 Å < 2.211 Å (atoms 3
    and 17)"``), None if it passes: non-finite positions, then the exploration collapse
    detector's geometry rules (per-pair minimum distances of `screen`; in pure water an H
    farther than `max_oh_bond` from every O), so selection and exploration judge alike.
    """
    from eip_al.explore.collapse import CollapseDetector  # lazy: eip_al.explore imports the model

    pos = atoms.positions
    if not np.all(np.isfinite(pos)):
        return "unphysical: positions not finite"
    why = CollapseDetector(collapse, atoms, target_temperature_K=1.0, screen=screen).geometry(pos)
    if why is None:
        return None
    kind, _, detail = why.partition(": ")
    return f"unphysical: {detail}" if kind == "min_distance" else f"unphysical: {why}"


def unphysical_counts(details: Sequence[str]) -> dict[str, int]:
    """Unphysical frames per cause: the element pair ('O-O') of a close contact, else the
    rule ('molecule_broken', 'positions not finite', ...)."""
    counts: dict[str, int] = {}
    for d in details:
        if not d:
            continue
        body = d.removeprefix("unphysical: ")
        first = body.split(" ")[0]
        head = first if "-" in first else body.split(":")[0].split(" (")[0]
        counts[head] = counts.get(head, 0) + 1
    return dict(sorted(counts.items()))


def _frame_sigma(atoms: Atoms, where: str) -> float:
    if "config_uncertainty" in atoms.info:
        value = atoms.info["config_uncertainty"]
    elif "uncertainty" in atoms.arrays:
        value = float(np.mean(atoms.arrays["uncertainty"]))  # same definition: mean_i σ_i
    else:
        raise FrameError(f"{where}: missing info 'config_uncertainty' (and no 'uncertainty' array)")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise FrameError(f"{where}: info 'config_uncertainty' is not a number: {value!r}") from None


def _canonical_id(atoms: Atoms) -> str:
    """The frame's id; recomputed when missing or mangled (ASE parses all-digit ids as numbers)."""
    fid = atoms.info.get("frame_id")
    return fid if isinstance(fid, str) and fid else frame_id(atoms)


def pool_candidates(cfg: ALConfig, run: RunDir, summary: ExplorationSummary) -> CandidatePool:
    """Read every walker's candidate frames, with provenance, σ and unphysical flags."""
    frames: list[Atoms] = []
    walker_idx, kinds, steps, times, sigmas, keys, unphys, detail = [], [], [], [], [], [], [], []
    names = [w.walker for w in summary.walkers]
    screens: dict[tuple[int, ...], PairScreen] = {}
    if len(set(names)) != len(names):
        raise RunDirError(
            f"exploration summary of generation {summary.generation} repeats a walker name"
        )
    for w_i, res in enumerate(summary.walkers):
        path = run.abs(res.frames_extxyz)
        if not res.frames_extxyz or not path.is_file() or path.stat().st_size == 0:
            if res.n_candidates > 0:
                raise FrameError(
                    f"{path}: walker {res.walker} reports {res.n_candidates} candidates "
                    "but the file is missing or empty"
                )
            continue
        got = read_frames(path, require_labels=False, require_cell=False)
        if len(got) != res.n_candidates:
            log.warning(
                "%s: %d frames, walker artifact says n_candidates=%d",
                path,
                len(got),
                res.n_candidates,
            )
        for f_i, atoms in enumerate(got):
            where = f"{path}: frame {f_i}"
            if "step" not in atoms.info:
                raise FrameError(f"{where}: missing info 'step'")
            try:
                step = int(atoms.info["step"])
            except (TypeError, ValueError):
                raise FrameError(
                    f"{where}: info 'step' is not an integer: {atoms.info['step']!r}"
                ) from None
            sigma = _frame_sigma(atoms, where)
            why = (
                "flagged unphysical by exploration"
                if _as_bool(atoms.info.get("unphysical", False), where)
                else None
            )
            if why is None and not math.isfinite(sigma):
                why = f"config_uncertainty not finite ({sigma})"
            if why is None:
                species = tuple(sorted(set(atoms.numbers.tolist())))
                if species not in screens:
                    screens[species] = screen_for_run(cfg.explore.collapse, run, summary.generation, species)
                why = unphysical_reason(atoms, cfg.explore.collapse, screens[species])
            fid = _canonical_id(atoms)
            atoms.info["frame_id"] = fid
            atoms.info["walker"], atoms.info["kind"] = res.walker, res.kind  # the file's owner
            atoms.info.setdefault("source", res.kind)
            frames.append(atoms)
            walker_idx.append(w_i)
            kinds.append(res.kind)
            steps.append(step)
            times.append(float(atoms.info.get("time_fs", math.nan)))
            sigmas.append(sigma)
            keys.append(fid)
            unphys.append(why is not None)
            detail.append(why or "")
    return CandidatePool(
        frames=frames,
        walker_names=names,
        walker=np.asarray(walker_idx, dtype=np.int64),
        kind=kinds,
        step=np.asarray(steps, dtype=np.int64),
        time_fs=np.asarray(times, dtype=np.float64),
        sigma=np.asarray(sigmas, dtype=np.float64),
        key=np.asarray(keys, dtype=object),
        unphysical=np.asarray(unphys, dtype=bool),
        detail=detail,
        aleatoric=np.asarray([frame_aleatoric(a) for a in frames], dtype=np.float64),
    )


def dataset_frame_ids(path: Path) -> set[str]:
    """Frame ids of a dataset extxyz, read from the comment lines only (fast).

    Falls back to reading the whole file (and hashing structures) when a frame has no
    usable `frame_id`.
    """
    ids: set[str] = set()
    with open(path) as fh:
        index = 0
        while line := fh.readline():
            if not line.strip():
                continue
            try:
                n_atoms = int(line)
            except ValueError:
                raise FrameError(
                    f"{path}: frame {index}: expected an atom count, got {line.strip()[:40]!r}"
                ) from None
            fid = key_val_str_to_dict(fh.readline()).get("frame_id")
            if not isinstance(fid, str) or not fid:
                return {
                    _canonical_id(a)
                    for a in read_frames(path, require_labels=False, require_cell=False)
                }
            ids.add(fid)
            for _ in range(n_atoms):
                fh.readline()
            index += 1
    return ids


def _calculator(cfg: ALConfig, run: RunDir, gen: int):  # -> eip_al.calculator.EIPCalculator
    """The generation's trained model (raises a clear error if training is missing)."""
    from eip_al.calculator import EIPCalculator  # the model engineer's module

    training = load_valid(run.artifact_path(gen, "train"), TrainingResult)
    if training is None:
        raise RunDirError(
            f"{run.artifact_path(gen, 'train')}: no valid training result for generation {gen}"
        )
    return EIPCalculator(run.abs(training.checkpoint), cfg.explore.device), training


def validation_sigma(cfg: ALConfig, run: RunDir, gen: int) -> np.ndarray | None:
    """Configuration σ of the training's validation frames, predicted by this generation's model.

    Returns None (caller falls back to the configured lo) when the calculator module is
    not available or the dataset has no frame with split == "valid".
    """
    try:
        calc, training = _calculator(cfg, run, gen)
    except ImportError as exc:
        log.warning("adaptive lo unavailable (%s); using configured lo", exc)
        return None
    frames = read_frames(run.abs(training.dataset), require_labels=False, require_cell=False)
    valid = [a for a in frames if a.info.get("split") == "valid"]
    if not valid:
        log.warning("%s: no frame with split=valid; using configured lo", training.dataset)
        return None
    return np.asarray([float(p["config_uncertainty"]) for p in calc.predict_frames(valid)])


def frame_descriptors(cfg: ALConfig, run: RunDir, gen: int, frames: list[Atoms]) -> np.ndarray:
    """Invariant feature vector per frame (model's `descriptor` output) for FPS diversity."""
    try:
        calc, _ = _calculator(cfg, run, gen)
    except ImportError as exc:
        raise RunDirError(f"selection.diversity=fps needs the model calculator: {exc}") from exc
    return np.stack(
        [np.asarray(p["descriptor"], dtype=np.float64) for p in calc.predict_frames(frames)]
    )


def resolve_lo(
    cfg: ALConfig,
    run: RunDir,
    gen: int,
    valid_sigma_fn: Callable[[ALConfig, RunDir, int], np.ndarray | None] = validation_sigma,
) -> tuple[float, Literal["config", "adaptive"]]:
    """lo and where it came from: the config, or the `lo_quantile` of validation σ."""
    sel = cfg.selection
    if sel.lo_quantile is None:
        return sel.lo, "config"
    valid = valid_sigma_fn(cfg, run, gen)
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


def _generation_calibration(cfg: ALConfig, run: RunDir, gen: int) -> tuple[TrainingResult | None, Calibration | None]:
    """This generation's training result and its model's calibration (either may be None).

    With `selection.scale: calibrated` a missing training result or calibration is an error.
    """
    path = run.artifact_path(gen, "train")
    training = load_valid(path, TrainingResult)
    need = cfg.selection.scale == "calibrated"
    calibration, why = None, f"{path}: no valid training result for generation {gen}"
    if training is not None:
        checkpoint = run.abs(training.checkpoint)
        try:
            calibration = load_calibration(checkpoint)
            why = f"{checkpoint}: the model has no calibration (validation split too small to fit?)"
        except Exception as exc:  # unreadable checkpoint: only fatal when the scale needs it
            why = f"{checkpoint}: cannot read the calibration ({exc})"
    if need and calibration is None:
        raise RunDirError(f"selection.scale is 'calibrated' but {why}; use scale: raw")
    if calibration is None and training is not None:
        log.info("%s", why)
    return training, calibration


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
    valid_sigma_fn: Callable[[ALConfig, RunDir, int], np.ndarray | None] = validation_sigma,
    descriptor_fn: Callable[[ALConfig, RunDir, int, list[Atoms]], np.ndarray] = frame_descriptors,
) -> SelectionResult:
    """Select this generation's frames to label; writes selected.extxyz and decisions.csv.

    `selected.extxyz` is always written, empty (0 bytes) when nothing is selected —
    downstream steps check `n_selected` before reading it. The artifact itself is not
    written here: the caller writes it (e.g. with `rundir.run_step`). The two function
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
    lo, lo_source = resolve_lo(cfg, run, gen, valid_sigma_fn)
    training, calibration = _generation_calibration(cfg, run, gen)
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
        return descriptor_fn(cfg, run, gen, [pool.frames[i] for i in idx.tolist()])

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
