"""Exploration step: MD and eIP-UDD walkers with collapse detection (docs/exploration.md).

`walker_names(cfg)` lists a generation's walkers, `run_walker(cfg, run, gen, name)` runs
one (the flow runs them in parallel), `explore_generation(cfg, run, gen)` runs them all.
"""

from eip_al.explore.collapse import CollapseDetector
from eip_al.explore.udd import (
    UDDCalculator,
    bias_force_ratio,
    kulichenko_bias,
    limit_bias_forces,
    make_bias,
    reference_bias,
)
from eip_al.explore.walker import (
    LOG_COLUMNS,
    TrajectoryOutcome,
    WalkerPlan,
    explore_generation,
    run_trajectory,
    run_walker,
    walker_names,
    walker_plans,
)

__all__ = [
    "LOG_COLUMNS",
    "CollapseDetector",
    "TrajectoryOutcome",
    "UDDCalculator",
    "WalkerPlan",
    "bias_force_ratio",
    "explore_generation",
    "kulichenko_bias",
    "limit_bias_forces",
    "make_bias",
    "reference_bias",
    "run_trajectory",
    "run_walker",
    "walker_names",
    "walker_plans",
]
