"""Exploration walkers: conventional MD and eIP-UDD trajectories with collapse detection.

A walker is one trajectory: kind (the bias, `registries.BIASES`: md | udd), temperature, steps,
timestep, integrator (`thermostat`, `registries.WALKERS`: NVT Berendsen, Langevin or
Nosé–Hoover, NPT Berendsen or MTK), seed and a start frame drawn from the generation's
training data. Walkers of a generation are independent, so the flow may run
them in parallel; each writes, in ``gen-XXX/explore/``:

* ``<name>.csv``    one row per sane step: step, time_fs, energy (unbiased model E, eV),
  energy_bias (eV), sigma (configuration σ, eV/Å), sigma_max (max_i σ_i), temperature (K),
  bias_ratio (|F̃_b|/|F|; 0 for md), bias_ratio_median and bias_ratio_max (over atoms of
  |F̃_b,i|/|F_i|; 0 for md), volume (Å³) and density (g/cm³; NaN without a 3D cell);
* ``<name>.extxyz`` candidate frames every ``sample_every`` steps (never step 0, which is
  a training frame), with provenance and the model's σ arrays but NO labels;
* the `ExplorationResult` (written by the caller, `pipeline.walker_step`).

Both files are streamed to ``*.part`` files and renamed when the walker ends (files.py,
`WalkerFiles`, shared with the device engine). Every
``explore.restart_every`` steps a restart point (positions, momenta, cell, thermostat RNG,
the integrator's thermostat/barostat variables, file offsets) is saved, so an interrupted
walker resumes there instead of starting over.
A collapse (see `collapse.py`) stops the walker cleanly; nothing from the first insane
step on is logged or written.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.md.velocitydistribution import Stationary, thermalize_momenta

from eip_al.atomic import sha256_file
from eip_al.calculator import EIPCalculator
from eip_al.config import ALConfig, CollapseConfig, WalkerConfig
from eip_al.explore.biases import PreparedBias, prepare_bias
from eip_al.explore.collapse import CollapseDetector
from eip_al.explore.files import (
    LOG_COLUMNS,
    WalkerFiles,
    frame_values,
    log_row,
    log_statistics,
    write_candidate,
)
from eip_al.explore.integrators import (
    advance,
    integrator_state,
    make_dynamics,
    restore_integrator_state,
)
from eip_al.io import read_frames
from eip_al.model.checkpoint import resolve_device
from eip_al.progress import Throttle, say
from eip_al.rundir import RunDir, RunDirError, load_valid
from eip_al.schemas import ExplorationResult, TrainingResult
from eip_al.screening import PairScreen, screen_for_run
from eip_al.systems import density_g_cm3


def _say(label: str, message: str) -> None:
    """One progress line (eip_al/progress.py). Plain lines, not a rich live display: walkers
    may run in parallel threads (one live display at a time)."""
    say("explore", f"{label}: {message}")


# ----------------------------------------------------------------------------- naming
@dataclass(frozen=True)
class WalkerPlan:
    """One named walker: its config template and its index ``i`` in ``<kind>-<T>K-<i>``."""

    name: str
    config: WalkerConfig
    index: int

    @property
    def kind(self) -> str:
        return self.config.kind


def _temperature_label(t: float) -> str:
    return f"{t:g}".replace("+", "")


def walker_plans(cfg: ALConfig) -> list[WalkerPlan]:
    """Every walker of a generation, in config order; names ``<kind>-<T>K-<i>``.

    ``i`` counts walkers of the same kind and temperature across all templates, so names
    are unique. A walker's RNGs derive from (template seed, i, generation): md-300K-0 and
    udd-300K-0 of templates with equal seeds start from the same frame with the same
    velocities (a controlled MD vs UDD comparison), while two walkers of one kind and
    temperature never share initial conditions.
    """
    counters: dict[str, int] = {}
    plans = []
    for wc in cfg.explore.walkers:
        stem = f"{wc.kind}-{_temperature_label(wc.temperature_K)}K"
        for _ in range(wc.replicas):
            i = counters.get(stem, 0)
            counters[stem] = i + 1
            plans.append(WalkerPlan(name=f"{stem}-{i}", config=wc, index=i))
    return plans


def walker_names(cfg: ALConfig) -> list[str]:
    """Names of the configured walkers (deterministic, unique), e.g. md-300K-0, udd-300K-0."""
    return [p.name for p in walker_plans(cfg)]


def walker_plan(cfg: ALConfig, name: str) -> WalkerPlan:
    """The plan called `name`; ValueError listing the known names otherwise."""
    for plan in walker_plans(cfg):
        if plan.name == name:
            return plan
    raise ValueError(f"no walker named {name!r} in explore.walkers (known: {', '.join(walker_names(cfg))})")


def walker_seeds(plan: WalkerPlan, gen: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent RNGs (start frame, velocities, thermostat) from (seed, index, generation)."""
    ss = np.random.SeedSequence([plan.config.seed % 2**64, plan.index, gen])
    a, b, c = ss.spawn(3)
    return np.random.default_rng(a), np.random.default_rng(b), np.random.default_rng(c)


# ----------------------------------------------------------------------------- dynamics
def start_atoms(frame: Atoms, temperature_K: float, rng: np.random.Generator) -> Atoms:
    """A bare copy of `frame` (no labels) with Maxwell–Boltzmann velocities at T, zero COM momentum."""
    atoms = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
    thermalize_momenta(atoms, temperature_K, rng=rng)
    Stationary(atoms)
    return atoms


@dataclass(frozen=True)
class TrajectoryOutcome:
    """What `run_trajectory` did: steps integrated, collapse (if any), candidates written."""

    steps_run: int
    collapse_step: int | None
    collapse_reason: str | None
    n_candidates: int
    wall_time_s: float

    @property
    def collapsed(self) -> bool:
        return self.collapse_step is not None


def run_trajectory(
    atoms: Atoms,
    calc: Calculator,
    walker: WalkerConfig,
    collapse: CollapseConfig,
    log_path: Path,
    frames_path: Path,
    *,
    frame_info: dict[str, object] | None = None,
    thermostat_rng: np.random.Generator | None = None,
    restart_path: Path | None = None,
    restart_key: str = "",
    restart_every: int = 500,
    label: str = "walker",
    screen: PairScreen | None = None,
) -> TrajectoryOutcome:
    """Integrate `walker.steps` steps of MD (the walker's integrator, NVT or NPT) from `atoms`
    (with velocities) under `calc`.

    `calc` is an `EIPCalculator` (md) or a `UDDCalculator` (udd): anything whose results
    hold energy, forces, uncertainty arrays and config_uncertainty (and stress for NPT).
    Each sane step is logged; every `walker.sample_every` steps the frame is written as a candidate with
    `frame_info` added to its info. Stops at the first step the `CollapseDetector`
    rejects (with `screen` as its per-pair distance rule). With `restart_path`, a restart point is saved every `restart_every` steps
    and a matching one (same `restart_key`) is resumed from.
    """
    t_start = time.perf_counter()
    rng = thermostat_rng if thermostat_rng is not None else np.random.default_rng()
    files = WalkerFiles(log_path, frames_path, restart_path, restart_key)
    restart = files.open(atoms, rng)
    atoms.calc = calc
    dyn = make_dynamics(atoms, walker, rng)
    if restart is not None:
        restore_integrator_state(dyn, walker, restart.state)
    npt = walker.ensemble == "npt"
    detector = CollapseDetector(collapse, atoms, walker.temperature_K, screen=screen, variable_cell=npt)
    periodic = bool(atoms.pbc.all())
    mass = float(atoms.get_masses().sum())
    info = dict(frame_info or {})
    dt_fs = walker.timestep_fs
    collapse_step: int | None = None
    reason: str | None = None
    lines = Throttle(wait_first=True)

    try:
        log_fh, frames_fh = files.log, files.frames
        assert log_fh is not None and frames_fh is not None

        def sane(k: int, forces: np.ndarray) -> bool:
            """Check the frame of step k; log it (and maybe write it) if sane."""
            nonlocal collapse_step, reason
            res = calc.results
            values = frame_values(res)
            energy = values[0]
            temperature = float(atoms.get_temperature())
            volume = float(atoms.get_volume()) if periodic else math.nan
            density = density_g_cm3(mass, volume) if periodic else math.nan
            why = detector.check(atoms.positions, energy, forces, np.asarray(res["uncertainty"]), temperature,
                                 atoms.cell.array if npt else None)
            if why is not None:
                collapse_step, reason = k, why
                _say(label, f"collapsed at step {k} ({k * dt_fs:g} fs): {why}")
                return False
            log_fh.write(log_row(k, dt_fs, values, temperature, volume, density))
            if k > 0 and k % walker.sample_every == 0:
                write_candidate(frames_fh, atoms, res, info, step=k, time_fs=k * dt_fs,
                                temperature=temperature, values=values)
                files.n_candidates += 1
            return True

        _say(label, start_line(walker, files.step if restart is not None else None))
        forces = atoms.get_forces(md=True)
        ok = True if restart is not None else sane(0, forces)
        while ok and files.step < walker.steps:
            forces = advance(dyn, forces)
            files.step += 1
            ok = sane(files.step, forces)
            if not ok:
                break
            step = files.step
            if restart_path is not None and step % restart_every == 0 and step < walker.steps:
                files.save_restart(atoms, rng, time.perf_counter() - t_start, integrator_state(dyn, walker))
            if lines.due():
                log_fh.flush()
                _say(label, f"step {step}/{walker.steps} ({100 * step / walker.steps:.0f}%), "
                            f"{step * dt_fs:g} fs, σ={calc.results['config_uncertainty']:.3g} eV/Å, "
                            f"T={atoms.get_temperature():.0f} K"
                            + (f", ρ={density_g_cm3(mass, atoms.get_volume()):.3f} g/cm³" if npt else ""))
    except BaseException:
        files.close()
        raise
    files.finish()
    step, n_candidates, wall_before = files.step, files.n_candidates, files.wall_before
    wall = wall_before + time.perf_counter() - t_start
    _say(label, f"{'collapsed' if collapse_step is not None else 'finished'} after {step} steps, "
                f"{n_candidates} candidates, {wall:.1f} s")
    return TrajectoryOutcome(step, collapse_step, reason, n_candidates, wall)


def start_line(walker: WalkerConfig, resumed_at: int | None) -> str:
    """The progress line a walker starts (or resumes) with."""
    npt = walker.ensemble == "npt"
    return (f"{'resumed at step ' + str(resumed_at) if resumed_at is not None else 'started'}: {walker.steps} steps "
            f"of {walker.timestep_fs:g} fs at {walker.temperature_K:g} K ({walker.thermostat}"
            + (f", {walker.pressure_bar:g} bar)" if npt else ")"))


# ----------------------------------------------------------------------------- run dir level
def pick_start_frame(run: RunDir, gen: int, rng: np.random.Generator) -> tuple[Atoms, int, str]:
    """A training frame of generation `gen`'s dataset (split 'train' when splits exist).

    Returns (frame, index in the dataset file, dataset sha256).
    """
    manifest = run.dataset_for(gen)
    path = run.abs(manifest.dataset_extxyz)
    frames = read_frames(path, require_labels=False)
    pool = [k for k, a in enumerate(frames) if a.info.get("split") == "train"] or list(range(len(frames)))
    k = pool[int(rng.integers(len(pool)))]
    return frames[k], k, manifest.sha256


def training_frames(run: RunDir, gen: int, n: int) -> list[Atoms]:
    """Up to `n` training frames of generation `gen`'s dataset, evenly spaced (deterministic)."""
    manifest = run.dataset_for(gen)
    frames = read_frames(run.abs(manifest.dataset_extxyz), require_labels=False)
    train = [a for a in frames if a.info.get("split") == "train"] or frames
    idx = np.unique(np.linspace(0, len(train) - 1, min(n, len(train))).round().astype(int))
    return [train[k] for k in idx.tolist()]


@dataclass
class WalkerJob:
    """A walker ready to run: its start state, calculator and everything its result records."""

    run: RunDir
    gen: int
    plan: WalkerPlan
    atoms: Atoms
    collapse: CollapseConfig
    screen: PairScreen
    bias: PreparedBias
    restart_key: str
    restart_every: int

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        """(log csv, candidate extxyz, restart npz) of this walker."""
        out = self.run.step_dir(self.gen, "explore")
        name = self.plan.name
        return out / f"{name}.csv", out / f"{name}.extxyz", out / f"{name}.restart.npz"

    def __call__(self) -> ExplorationResult:
        """Integrate the trajectory (resuming from its restart point) and build the result."""
        log_csv, frames_xyz, restart = self.paths
        outcome = run_trajectory(
            self.atoms, self.bias.calc, self.plan.config, self.collapse, log_csv, frames_xyz,
            frame_info=self.frame_info,
            thermostat_rng=self.thermostat_rng(), restart_path=restart, restart_key=self.restart_key,
            restart_every=self.restart_every, label=self.label, screen=self.screen,
        )
        return self.result(outcome)

    def thermostat_rng(self) -> np.random.Generator:
        """A fresh copy of the walker's seeded thermostat RNG (a restart point sets its state)."""
        return walker_seeds(self.plan, self.gen)[2]

    @property
    def label(self) -> str:
        """How progress lines name this walker."""
        return f"gen {self.gen} {self.plan.name}"

    @property
    def frame_info(self) -> dict[str, object]:
        """Provenance added to each candidate frame's info."""
        plan = self.plan
        return {"walker": plan.name, "kind": plan.kind, "source": plan.kind, "generation": self.gen}

    def result(self, outcome: TrajectoryOutcome) -> ExplorationResult:
        """The `ExplorationResult` of this walker's finished (or collapsed) trajectory."""
        plan, wc, run = self.plan, self.plan.config, self.run
        log_csv, frames_xyz, _ = self.paths
        return ExplorationResult(
            generation=self.gen,
            walker=plan.name,
            kind=plan.kind,
            integrator=wc.thermostat,
            ensemble=wc.ensemble,
            pressure_bar=wc.pressure_bar if wc.ensemble == "npt" else None,
            temperature_K=wc.temperature_K,
            steps_requested=wc.steps,
            steps_run=outcome.steps_run,
            simulated_time_fs=outcome.steps_run * wc.timestep_fs,
            collapsed=outcome.collapsed,
            collapse_step=outcome.collapse_step,
            collapse_time_fs=outcome.collapse_step * wc.timestep_fs if outcome.collapsed else None,
            collapse_reason=outcome.collapse_reason,
            n_candidates=outcome.n_candidates,
            log_csv=run.rel(log_csv),
            frames_extxyz=run.rel(frames_xyz),
            wall_time_s=outcome.wall_time_s,
            min_pair_distance=self.screen.thresholds,
            **self.bias.result,
            **log_statistics(log_csv, self.bias.biased),
        )


def walker_checkpoint(run: RunDir, gen: int) -> Path:
    """The model checkpoint generation `gen` explores with (from its `TrainingResult`)."""
    train_path = run.artifact_path(gen, "train")
    training = load_valid(train_path, TrainingResult)
    if training is None:
        raise RunDirError(f"{train_path}: no valid training result for generation {gen}; train first")
    return run.abs(training.checkpoint)


def prepare_walker(
    cfg: ALConfig, run: RunDir, gen: int, name: str, base: EIPCalculator | None = None
) -> WalkerJob:
    """Walker `name` of generation `gen`, ready to run with `base` as its unbiased model
    (default: its own `EIPCalculator` of the generation's checkpoint on `explore.device`).

    Starts from a seeded training frame with seeded Maxwell–Boltzmann velocities; the
    walker's bias (`registries.BIASES`, e.g. udd: a `UDDCalculator`, amplitude scaled first when
    configured) wraps `base`; an NPT walker's base computes the stress with every pass. The
    restart key covers everything that changes the trajectory, not how walkers are
    scheduled, so a walker interrupted in a batch resumes alone and vice versa.
    """
    plan = walker_plan(cfg, name)
    wc = plan.config
    checkpoint = walker_checkpoint(run, gen)
    frame_rng, velocity_rng, _ = walker_seeds(plan, gen)
    frame, frame_index, dataset_sha = pick_start_frame(run, gen, frame_rng)
    atoms = start_atoms(frame, wc.temperature_K, velocity_rng)

    screen = screen_for_run(cfg.explore.collapse, run, gen, atoms.numbers)
    if base is None:
        base = EIPCalculator(checkpoint, device=cfg.explore.device, dtype=explore_dtype(cfg),
                             compile=cfg.explore.compile)
    base.stress = wc.ensemble == "npt"
    bias = prepare_bias(plan.kind, base, cfg.explore, lambda n: training_frames(run, gen, n), f"gen {gen} {name}")
    key_data = {
        "generation": gen, "walker": plan.name, "config": wc.model_dump(mode="json"),
        "bias": bias.settings,
        "collapse": cfg.explore.collapse.model_dump(mode="json"), "device": cfg.explore.device,
        "dtype": str(base.model.dtype),
        "checkpoint_sha256": sha256_file(checkpoint), "dataset_sha256": dataset_sha, "start_frame": frame_index,
        "screen": screen.thresholds, "log_columns": LOG_COLUMNS,
        # the device engine integrates in torch: the same trajectory up to float rounding, not
        # bit for bit, so its restart points are its own (keys of ASE-engine walkers unchanged)
        **({"engine": cfg.explore.engine} if cfg.explore.engine != "ase" else {}),
    }
    restart_key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()
    return WalkerJob(run, gen, plan, atoms, cfg.explore.collapse, screen, bias, restart_key,
                     cfg.explore.restart_every)


def explore_batched(cfg: ALConfig) -> bool:
    """Whether the walkers advance batched: always with the device engine, otherwise
    `explore.batched`, where 'auto' means batched except on CPU under a Dask task runner
    (there the flow spreads the walkers over the cluster's workers instead). On 2 CPU cores
    four batched walkers measured 1.17–1.51× the throughput of four one after another
    (BENCHMARKS.md, explore-replicas.json), and a batch of one costs what a walker alone does."""
    if cfg.explore.engine == "device":  # always together: one state, one pass for all walkers
        return True
    if cfg.explore.batched != "auto":
        return bool(cfg.explore.batched)
    return resolve_device(cfg.explore.device).type == "cuda" or cfg.flow.task_runner != "dask"


def explore_dtype(cfg: ALConfig) -> str | None:
    """The model precision of exploration: `explore.dtype`, where 'auto' is float32 on a
    GPU and the checkpoint's own precision on CPU (None)."""
    if cfg.explore.dtype != "auto":
        return cfg.explore.dtype
    return "float32" if resolve_device(cfg.explore.device).type == "cuda" else None


def run_walker(cfg: ALConfig, run: RunDir, gen: int, name: str) -> ExplorationResult:
    """Run walker `name` of generation `gen` alone with that generation's model.

    Writes ``explore/<name>.csv`` and ``explore/<name>.extxyz`` and resumes from
    ``explore/<name>.restart.npz`` if an earlier attempt was interrupted. A collapse is
    recorded in the result, not raised. The caller writes the result (``<name>.json``).
    """
    return prepare_walker(cfg, run, gen, name)()
