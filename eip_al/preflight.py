"""Pre-flight: everything about a run that can be checked before any work starts.

`preflight(config_path, run_dir, fork)` loads the config and returns the plan (what would
run, where) and every problem found: missing seed, structure, template or user-deck files,
executables not on PATH (CP2K for local CP2K labeling, sbatch/squeue for Slurm), a CP2K
input that cp2k-input-tools cannot validate, a deck without a &KIND for an element of the
system, an ASE calculator that cannot be imported or built, tblite missing for xtb, a
changed config under an existing run dir without --fork, a run dir that cannot be
created, a missing Dask extra or GPU. `eip-al check` prints both; `eip-al run` refuses
to start (and writes nothing) while there are problems. The labeler's and the backend's
own checks come from their classes (`Labeler.preflight`, `Backend.problems`), so nothing
here branches on a labeler or backend name. Nothing here writes files, except
that validating a CP2K deck caches the installed CP2K's input schema (`cp2k --xml`).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from eip_al.config import ALConfig, ConfigError, check_safe_path, load_config

WATER_ELEMENTS = frozenset({"H", "O"})


@dataclass
class Preflight:
    """The outcome of the checks: `cfg` is None when the config itself did not load."""

    cfg: ALConfig | None
    run_dir: Path | None
    plan: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def plan_lines(cfg: ALConfig, run_dir: Path) -> list[str]:
    """What the run would do, one line each (generations, walkers, labeler, backend, run dir)."""
    from eip_al.explore import walker_names

    walkers = ", ".join(
        f"{w.replicas} x {w.kind} ({w.steps} steps, {w.temperature_K:g} K)" for w in cfg.explore.walkers
    )
    from eip_al.label.backends import backend_for
    from eip_al.label.jobs import labeler_class

    lab = cfg.labeler
    seed = f"{cfg.seed_data.n_frames} frames of mock-force-field MD" if cfg.seed_data.source == "md" else str(cfg.seed_data.file)
    return [
        f"run: {cfg.name}, up to {cfg.generations} generation(s)",
        f"system: {cfg.system.kind}" + (f" ({cfg.system.n_molecules} H2O)" if cfg.system.kind == "water" else f" ({cfg.system.structure_file})"),
        f"seed data: {seed}",
        f"walkers per generation: {len(walker_names(cfg))} = {walkers}",
        f"selection: up to {cfg.selection.n_select} frames per generation",
        f"labeler: {labeler_class(lab.kind).describe(lab)}",
        f"backend: {backend_for(lab.backend).describe(lab)}",
        f"run dir: {run_dir}",
    ]


def _file_problems(cfg: ALConfig) -> list[str]:
    """Input files named by the config that do not exist (the labeler's own: `_labeler_problems`)."""
    wanted: list[tuple[str, Path]] = []
    if cfg.system.kind == "file" and cfg.system.structure_file is not None:
        wanted.append(("system.structure_file", cfg.system.structure_file))
    if cfg.seed_data.source == "file" and cfg.seed_data.file is not None:
        wanted.append(("seed_data.file", cfg.seed_data.file))
    return [f"{what}: {path} not found" for what, path in wanted if not Path(path).is_file()]


def _system_elements(cfg: ALConfig) -> tuple[frozenset[str] | None, list[str]]:
    """Elements of the simulated system, and a problem if its structure file cannot be read
    (None, no problem, if the file is missing: `_file_problems` says so)."""
    if cfg.system.kind == "water":
        return WATER_ELEMENTS, []
    path = Path(cfg.system.structure_file)
    if not path.is_file():
        return None, []
    from eip_al.systems import load_structure

    try:
        return frozenset(load_structure(path).get_chemical_symbols()), []
    except Exception as exc:  # ASE and pymatgen raise many kinds for an unreadable file
        return None, [f"system.structure_file: {path}: cannot be read: {exc}"]


def _labeler_problems(cfg: ALConfig, elements: frozenset[str] | None) -> list[str]:
    """What the backend needs here (sbatch for Slurm) and what the labeler finds wrong with
    its settings (`Labeler.preflight`: CP2K deck and executable, ASE calculator, tblite)."""
    from eip_al.label.backends import backend_for
    from eip_al.label.jobs import labeler_class

    lab = cfg.labeler
    try:
        cls = labeler_class(lab.kind)
    except ConfigError as exc:
        return [str(exc)]
    backend = backend_for(lab.backend)
    return backend.problems(lab) + cls.preflight(lab, backend.runs_here, elements)


def _run_dir_problems(cfg: ALConfig, run_dir: Path, fork: bool) -> list[str]:
    from eip_al.rundir import RunDir

    try:
        check_safe_path(run_dir, "run directory")
    except ConfigError as exc:
        return [str(exc)]
    run = RunDir(run_dir)
    if run.root.exists() and not run.root.is_dir():
        return [f"run directory {run.root}: exists and is not a directory"]
    try:
        changed = run.science_changes(cfg)
    except (ConfigError, OSError) as exc:
        return [f"run directory {run.root}: its config.yaml cannot be read: {exc}"]
    if changed and not fork:
        return [
            f"{run.config_path}: the config differs from the one this run was started with "
            f"(changed: {', '.join(changed)}); use a new run directory, or --fork"
        ]
    existing = next(p for p in (run.root, *run.root.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"run directory {run.root}: {existing} is not writable"]
    return []


def _runtime_problems(cfg: ALConfig) -> list[str]:
    problems = []
    if cfg.flow.task_runner == "dask" and importlib.util.find_spec("prefect_dask") is None:
        problems.append("flow.task_runner dask: prefect-dask is not installed (pip install -e '.[dask]')")
    cuda = [s for s, d in (("train.device", cfg.train.device), ("explore.device", cfg.explore.device)) if d == "cuda"]
    if cuda:
        import torch

        if not torch.cuda.is_available():
            problems.append(f"{', '.join(cuda)}: cuda, but no CUDA device is available")
    return problems


def preflight(config_path: Path | str, run_dir: Path | str | None = None, fork: bool = False) -> Preflight:
    """Load the config and run every check; never raises for a problem it can describe."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        return Preflight(cfg=None, run_dir=None, problems=[str(exc)])
    root = Path(run_dir) if run_dir is not None else cfg.resolved_run_dir()
    elements, problems = _system_elements(cfg)
    problems += _file_problems(cfg) + _labeler_problems(cfg, elements)
    problems += _runtime_problems(cfg) + _run_dir_problems(cfg, root, fork)
    return Preflight(cfg=cfg, run_dir=root, plan=plan_lines(cfg, root), problems=problems)
