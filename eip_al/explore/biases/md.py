"""Walker kind ``md``: no bias, the model's own forces (and stress)."""

from __future__ import annotations

from eip_al.calculator import EIPCalculator
from eip_al.config import ExploreConfig
from eip_al.explore.biases import FrameSource, PreparedBias


def prepare(base: EIPCalculator, explore: ExploreConfig, frames: FrameSource, label: str) -> PreparedBias:
    return PreparedBias(base, None)
