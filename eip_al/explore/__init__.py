"""Exploration step: MD and eIP-UDD walkers with collapse detection (docs/exploration.md).

`walker_names(cfg)` lists a generation's walkers, `run_walker(cfg, run, gen, name)` runs
one, `run_walkers(cfg, run, gen, names)` runs several (batched on one model with
`explore.batched`), `explore_generation(cfg, run, gen)` runs them all. Integrators
(`integrators/`, `registries.WALKERS`) and biases (`biases/`, `registries.BIASES`) plug in by registry.
"""

from eip_al.explore.batch import ReplicaBatch, ReplicaCalculator, explore_generation, run_walkers
from eip_al.explore.collapse import CollapseDetector
from eip_al.explore.files import LOG_COLUMNS
from eip_al.explore.udd import (
    UDDCalculator,
    bias_force_ratio,
    kulichenko_bias,
    limit_bias_forces,
    make_bias,
    reference_bias,
)
from eip_al.explore.walker import (
    TrajectoryOutcome,
    WalkerJob,
    WalkerPlan,
    prepare_walker,
    run_trajectory,
    run_walker,
    walker_names,
    walker_plans,
)

__all__ = [
    "LOG_COLUMNS",
    "CollapseDetector",
    "ReplicaBatch",
    "ReplicaCalculator",
    "TrajectoryOutcome",
    "UDDCalculator",
    "WalkerJob",
    "WalkerPlan",
    "bias_force_ratio",
    "explore_generation",
    "kulichenko_bias",
    "limit_bias_forces",
    "make_bias",
    "prepare_walker",
    "reference_bias",
    "run_trajectory",
    "run_walker",
    "run_walkers",
    "walker_names",
    "walker_plans",
]
