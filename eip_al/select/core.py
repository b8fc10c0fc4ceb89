"""The pure selection core on arrays: trust bands, the shortlist, σ-weighted FPS (docs/selection.md).

Vectorised, no files, no model: 10^6 candidates are decided in seconds and every rule is
testable on constructed arrays. Every pooled frame gets exactly one reason; the first rule
that applies wins, in this order: unphysical → accurate / failed_band → label_noise →
duplicate_dataset → duplicate_pool → step_gap → over_budget → fps_not_chosen; otherwise
it is selected.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

import numpy as np

from eip_al.schemas import TrustFractions

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
    `eip_al.uq.label_noise_flags` — candidates among them are not selected.

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
