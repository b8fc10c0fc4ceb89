"""Walker biases by registry (`registries.BIASES`; the walker `kind`): one module per bias.

A module has ``prepare(base, explore, frames, label) -> PreparedBias``: the calculator the
walker integrates with, built around `base` (the unbiased `EIPCalculator` of the
generation), from the `ExploreConfig` `explore`; ``frames(n)`` gives up to n training
frames (e.g. to scale the bias) and `label` names the walker in progress lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator

from eip_al.calculator import EIPCalculator
from eip_al.config import ExploreConfig
from eip_al.registries import BIASES

FrameSource = Callable[[int], list[Atoms]]


@dataclass(frozen=True)
class PreparedBias:
    """A walker's calculator and what its bias records."""

    calc: Calculator  # what the integrator sees (the base itself when unbiased)
    settings: dict[str, Any] | None  # the bias settings as used (enter the restart key); None: unbiased
    result: dict[str, Any] = field(default_factory=dict)  # `ExplorationResult` fields it fills

    @property
    def biased(self) -> bool:
        return self.settings is not None


def prepare_bias(kind: str, base: EIPCalculator, explore: ExploreConfig, frames: FrameSource,
                 label: str) -> PreparedBias:
    """The bias of walker kind `kind` (a key of `registries.BIASES`) around `base`."""
    if kind not in BIASES:
        raise ValueError(f"unknown walker kind {kind!r} (expected one of {', '.join(BIASES)})")
    return import_module(BIASES[kind].target).prepare(base, explore, frames, label)
