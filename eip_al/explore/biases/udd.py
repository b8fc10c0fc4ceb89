"""Walker kind ``udd``: the eIP-UDD bias (`explore.udd`, eip_al/explore/udd.py), its amplitude
scaled to `target_bias_ratio` on the model's training frames when configured."""

from __future__ import annotations

from eip_al.calculator import EIPCalculator
from eip_al.config import ExploreConfig
from eip_al.explore.biases import FrameSource, PreparedBias
from eip_al.explore.udd import UDDCalculator, scale_amplitude
from eip_al.progress import say


def prepare(base: EIPCalculator, explore: ExploreConfig, frames: FrameSource, label: str) -> PreparedBias:
    udd, target = explore.udd, explore.udd.target_bias_ratio
    if target is not None:
        scale = scale_amplitude(base, udd, frames(udd.scale_frames), target)
        say("explore", f"{label}: UDD amplitude A = {scale.A:.4g} eV for median |F_b|/|F| {scale.achieved:.3g} "
                       f"(target {target:g}, {scale.n_frames} training frames)")
        udd = udd.model_copy(update={"A": scale.A})
    return PreparedBias(UDDCalculator(base, udd), udd.model_dump(mode="json"),
                        {"udd_A": udd.A, "udd_target_ratio": target})
