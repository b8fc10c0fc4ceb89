"""Selection (docs/selection.md): which explored frames to label.

* `core`: the pure, vectorised rules on arrays (trust bands, shortlist, σ-weighted FPS);
* `pool`: the walkers' candidate frames and the chain of physical filters;
* `step`: the generation step `select_generation` (the model loaded once per step).
"""

from eip_al.select.core import (
    ACCURATE,
    BANDS,
    CANDIDATE,
    FAILED,
    LO_MAX_FRACTION,
    REASONS,
    Decisions,
    R,
    SelectionRules,
    adaptive_lo,
    classify_bands,
    farthest_point_sampling,
    select_pool,
    trust_fractions,
)
from eip_al.select.pool import (
    CandidatePool,
    FrameFilter,
    dataset_frame_ids,
    physical_filters,
    pool_candidates,
    unphysical_counts,
    unphysical_reason,
)
from eip_al.select.step import (
    SelectionModel,
    calibrated_config_uncertainty,
    frame_descriptors,
    resolve_lo,
    select_generation,
    validation_sigma,
)

__all__ = [
    "ACCURATE", "BANDS", "CANDIDATE", "FAILED", "LO_MAX_FRACTION", "R", "REASONS", "CandidatePool",
    "Decisions", "FrameFilter", "SelectionModel", "SelectionRules", "adaptive_lo", "calibrated_config_uncertainty",
    "classify_bands", "dataset_frame_ids", "farthest_point_sampling", "frame_descriptors", "physical_filters",
    "pool_candidates", "resolve_lo", "select_generation", "select_pool", "trust_fractions", "unphysical_counts",
    "unphysical_reason", "validation_sigma",
]
