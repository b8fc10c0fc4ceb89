"""A synthetic but schema-valid run directory, for tests that need a run without training.

`build_synthetic_run` writes, per generation, every step's files and artifact (train,
explore, select, label, merge and the generation record) from small periodic water boxes
with known geometry, so reports, flows and CLI commands can be tested in seconds. Knobs
make the awkward cases: collapsed walkers, a generation with zero selected frames,
labeling failures, steps that never ran. `synthetic_predictor` stands in for the model
(deterministic per frame, errors growing with σ) wherever a test needs predictions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ase import Atoms

from eip_al.atomic import atomic_write_bytes, atomic_write_text, sha256_file
from eip_al.config import ALConfig, config_from_mapping
from eip_al.integrity import seal
from eip_al.io import attach_labels, frame_id, write_frames
from eip_al.rundir import RunDir
from eip_al.schemas import (
    DatasetManifest,
    ExplorationResult,
    ExplorationSummary,
    GenerationRecord,
    JobOutcome,
    LabelingResult,
    SelectionResult,
    StepName,
    StepRecord,
    TheoryFingerprint,
    TrainingResult,
    TrustFractions,
    ValidationMetrics,
)

THEORY = TheoryFingerprint(code="mock-qspcfw", method="q-SPC/Fw")
SPACING = 3.2  # Å between molecules on the grid
DT_FS = 0.5
SAMPLE_EVERY = 5
FAILURE_CLASSES = ("scf_not_converged", "walltime", "crashed")

# Geometry spread per walker kind: (angle mean, angle sd, bond mean, bond sd); UDD wider.
GEOMETRY = {"md": (104.5, 3.0, 0.97, 0.02), "udd": (106.0, 9.0, 1.00, 0.06)}
# log-σ_config (eV/Å) range over a trajectory: MD stays low, UDD climbs.
SIGMA_RANGE = {"md": (0.02, 0.3), "udd": (0.08, 2.0)}


@dataclass
class SyntheticRun:
    run: RunDir
    cfg: ALConfig


def water_box(
    angles_deg: np.ndarray, bonds_A: np.ndarray, rng: np.random.Generator, grid: int = 2
) -> Atoms:
    """grid³ water molecules with given H–O–H angles and O–H bonds (both bonds per molecule),
    random orientations, wrapped into a periodic cubic box (so some molecules straddle it)."""
    n = grid**3
    if angles_deg.shape != (n,) or bonds_A.shape != (n, 2):
        raise ValueError(f"need {n} angles and ({n}, 2) bonds")
    symbols, positions = [], []
    shift = rng.uniform(0, SPACING, 3)  # push molecules across the box faces
    for m, (ix, iy, iz) in enumerate(np.ndindex(grid, grid, grid)):
        o = np.array([ix, iy, iz], float) * SPACING + shift
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # random rotation
        half = np.radians(angles_deg[m]) / 2
        u1 = q @ np.array([np.sin(half), np.cos(half), 0.0])
        u2 = q @ np.array([-np.sin(half), np.cos(half), 0.0])
        symbols += ["O", "H", "H"]
        positions += [o, o + bonds_A[m, 0] * u1, o + bonds_A[m, 1] * u2]
    atoms = Atoms(symbols, positions=positions, cell=[grid * SPACING] * 3, pbc=True)
    atoms.wrap()
    return atoms


def _unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    v = np.abs(rng.normal(size=(n, 3))) + 0.05
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _with_uncertainty(atoms: Atoms, sigma_config: float, rng: np.random.Generator) -> Atoms:
    """Attach σ arrays whose per-atom mean is exactly `sigma_config` (as the model writes them)."""
    n = len(atoms)
    s = rng.lognormal(0.0, 0.5, n)
    s *= sigma_config / s.mean()
    atoms.arrays["uncertainty"] = s
    atoms.arrays["uncertainty_components"] = _unit_rows(rng, n) * s[:, None]
    ale = 0.02 + 0.1 * s * rng.lognormal(0.0, 0.5, n)
    atoms.arrays["aleatoric_components"] = _unit_rows(rng, n) * ale[:, None]
    atoms.info["config_uncertainty"] = float(s.mean())
    atoms.info["sigma_max"] = float(s.max())
    return atoms


def _reference_labels(atoms: Atoms) -> tuple[float, np.ndarray]:
    """Deterministic 'DFT' labels of a frame (seeded by its content)."""
    rng = np.random.default_rng(int(frame_id(atoms)[:8], 16))
    forces = rng.normal(0.0, 1.0, (len(atoms), 3))
    return float(-14.0 * len(atoms) / 3 + rng.normal(0.0, 0.2)), forces


def synthetic_predictor(checkpoint: Path, frames: list[Atoms]) -> list[dict[str, Any]]:
    """Model stand-in: per-atom force errors of size ~σ_i in random directions.

    σ_i comes from the frame's `uncertainty` array when present, else is drawn per frame;
    everything is seeded by the frame content, so calling it twice gives the same result.
    """
    out = []
    for atoms in frames:
        rng = np.random.default_rng(int(frame_id(atoms)[8:16], 16))
        n = len(atoms)
        sigma = (np.asarray(atoms.arrays["uncertainty"], float) if "uncertainty" in atoms.arrays
                 else rng.lognormal(np.log(0.1), 0.6, n))
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        err = sigma * rng.lognormal(0.0, 0.4, n)
        forces = atoms.get_forces() + direction * err[:, None]
        comps = _unit_rows(rng, n) * sigma[:, None]
        out.append({
            "energy": atoms.get_potential_energy() + rng.normal(0.0, 0.005) * n,
            "forces": forces,
            "uncertainty": sigma,
            "uncertainty_components": comps,
            "aleatoric_components": _unit_rows(rng, n) * 0.03,
            "config_uncertainty": float(sigma.mean()),
        })
    return out


def _labeled_frame(atoms: Atoms, **info: Any) -> Atoms:
    energy, forces = _reference_labels(atoms)
    atoms.info.update(info)
    atoms.info["frame_id"] = frame_id(atoms)
    return attach_labels(atoms, energy, forces)


def _sample_box(kind: str, rng: np.random.Generator) -> Atoms:
    a_mu, a_sd, b_mu, b_sd = GEOMETRY[kind]
    return water_box(rng.normal(a_mu, a_sd, 8), rng.normal(b_mu, b_sd, (8, 2)), rng)


def _write_seed(run: RunDir, rng: np.random.Generator, n_frames: int = 6) -> DatasetManifest:
    splits = ["train", "train", "valid", "test", "test", "train"][:n_frames]
    frames = [
        _labeled_frame(_sample_box("md", rng), generation=-1, source="seed", split=sp)
        for sp in splits
    ]
    path = run.seed_dir / "dataset.extxyz"
    write_frames(path, frames)
    m = DatasetManifest(
        generation=-1, dataset_extxyz=run.rel(path), n_frames=len(frames),
        counts_by_source={"seed": len(frames)}, counts_by_generation={"-1": len(frames)},
        split_counts={s: splits.count(s) for s in set(splits)}, theory=THEORY,
        sha256=sha256_file(path),
    )
    m = seal(m, run.root)
    m.write(run.seed_dir / "artifact.json")
    return m


def _write_train(run: RunDir, gen: int, n_frames: int, rng: np.random.Generator) -> None:
    d = run.step_dir(gen, "train")
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d / "model.pt", b"synthetic checkpoint: use synthetic_predictor")
    epochs = np.arange(12)
    mae = 0.3 * np.exp(-epochs / 5) + 0.05 / (gen + 1)
    curves = pd.DataFrame({
        # the column names eip_al/train.py writes (validation metrics unprefixed)
        "epoch": epochs, "train_loss": 2.0 * np.exp(-epochs / 4) + 0.1, "energy_mae_per_atom": mae / 20,
        "force_mae": mae, "force_rmse": 1.3 * mae, "sigma_mean": 0.8 * mae,
        "spearman_atom": np.linspace(0.2, 0.7, epochs.size), "lr": 1e-3 * 0.5 ** (epochs // 6),
        "note": ["synthetic"] * epochs.size,  # an unknown column the report must ignore
    })
    atomic_write_text(d / "metrics.csv", curves.to_csv(index=False))
    best = int(np.argmin(curves["force_mae"]))
    seal(TrainingResult(
        generation=gen, checkpoint=run.rel(d / "model.pt"), metrics_csv=run.rel(d / "metrics.csv"),
        dataset=run.rel(run.dataset_manifest_path(gen)), n_train=n_frames - 1, n_valid=1,
        epochs_run=int(epochs.size), best_epoch=best, stopped_reason="max_epochs", device="cpu",
        wall_time_s=float(rng.uniform(5, 10)),
        valid=ValidationMetrics(n_frames=1, energy_mae_per_atom=float(mae[best] / 20),
                                force_mae=float(mae[best]), force_rmse=float(1.3 * mae[best]),
                                sigma_mean=float(0.8 * mae[best]), aleatoric_mean=0.03,
                                spearman_atom=0.6, roc_auc_atom=0.8),
        element_energies={"H": -13.6, "O": -432.0},
    ), run.root).write(run.artifact_path(gen, "train"))


def _write_walker(
    run: RunDir, gen: int, walker: str, kind: str, n_steps: int, collapse_at: int | None,
    rng: np.random.Generator,
) -> tuple[ExplorationResult, list[Atoms]]:
    d = run.step_dir(gen, "explore")
    steps_run = n_steps if collapse_at is None else collapse_at
    step = np.arange(steps_run + 1)
    lo, hi = SIGMA_RANGE[kind]
    frac = step / max(n_steps, 1)
    sigma = lo * (hi / lo) ** (frac * rng.uniform(0.6, 1.0)) * rng.lognormal(0, 0.1, step.size)
    if collapse_at is not None:
        sigma[-3:] *= np.array([2.0, 4.0, 8.0])[-min(3, step.size):]
    log = pd.DataFrame({
        "step": step, "time_fs": step * DT_FS,
        "energy": -1100.0 + np.cumsum(rng.normal(0, 0.05, step.size)),
        "energy_bias": (-2.0 * sigma) if kind == "udd" else np.zeros(step.size),
        "sigma": sigma, "sigma_max": sigma * 3.0,
        "temperature": 300 + rng.normal(0, 10, step.size),
        "bias_ratio": rng.uniform(0.2, 0.5, step.size) if kind == "udd" else np.zeros(step.size),
    })
    log_path = d / f"{walker}.csv"
    atomic_write_text(log_path, log.to_csv(index=False))
    # Candidate frames every SAMPLE_EVERY steps, never after a collapse.
    frames = []
    for s in step[::SAMPLE_EVERY]:
        if collapse_at is not None and s >= collapse_at:
            break
        atoms = _with_uncertainty(_sample_box(kind, rng), float(sigma[s]), rng)
        atoms.info.update(walker=walker, kind=kind, step=int(s), time_fs=float(s * DT_FS), generation=gen,
                          source=kind, energy_bias=float(log["energy_bias"][s]), unphysical=False)
        atoms.info["frame_id"] = frame_id(atoms)
        frames.append(atoms)
    frames_path = d / f"{walker}.extxyz"
    if frames:
        write_frames(frames_path, frames)
    else:
        atomic_write_text(frames_path, "")
    collapsed = collapse_at is not None
    res = ExplorationResult(
        generation=gen, walker=walker, kind=kind, temperature_K=300.0, steps_requested=n_steps,
        steps_run=steps_run, simulated_time_fs=steps_run * DT_FS, collapsed=collapsed,
        collapse_step=collapse_at, collapse_time_fs=collapse_at * DT_FS if collapsed else None,
        collapse_reason="min_distance 0.41 Å < 0.6 Å" if collapsed else None,
        n_candidates=len(frames), log_csv=run.rel(log_path), frames_extxyz=run.rel(frames_path),
        sigma_mean=float(sigma.mean()), sigma_max=float(log["sigma_max"].max()),
        energy_mean=float(log["energy"].mean()), energy_std=float(log["energy"].std(ddof=0)),
        bias_ratio_mean=float(log["bias_ratio"].mean()) if kind == "udd" else None,
        wall_time_s=float(rng.uniform(1, 3)),
    )
    res = seal(res, run.root)
    res.write(d / f"{walker}.json")
    return res, frames


def _fractions(band: np.ndarray) -> TrustFractions:
    n = int(band.size)
    frac = {b: float(np.count_nonzero(band == b) / n) if n else 0.0 for b in ("accurate", "candidate", "failed")}
    return TrustFractions(n=n, **frac)


def _write_select(
    run: RunDir, cfg: ALConfig, gen: int, pool: list[Atoms], n_select: int
) -> list[Atoms]:
    d = run.step_dir(gen, "select")
    d.mkdir(parents=True, exist_ok=True)
    lo, hi = cfg.selection.lo, cfg.selection.hi
    sigma = np.array([a.info["config_uncertainty"] for a in pool])
    band = np.where(sigma < lo, "accurate", np.where(sigma < hi, "candidate", "failed"))
    order = [i for i in np.argsort(-sigma) if band[i] == "candidate"][:n_select]
    chosen = np.zeros(len(pool), bool)
    chosen[order] = True
    walker = np.array([a.info["walker"] for a in pool])
    decisions = pd.DataFrame({
        "frame_id": [a.info["frame_id"] for a in pool], "walker": walker,
        "kind": [a.info["kind"] for a in pool], "step": [a.info["step"] for a in pool],
        "time_fs": [a.info["time_fs"] for a in pool], "sigma": sigma, "band": band,
        "decision": np.where(chosen, "selected", "rejected"),
        "reason": np.where(chosen, "selected", np.where(band == "candidate", "over_budget", band)),
    })
    atomic_write_text(d / "decisions.csv", decisions.to_csv(index=False))
    selected = [pool[i] for i in order]
    sel_path = d / "selected.extxyz"
    if selected:
        write_frames(sel_path, selected)
    else:
        atomic_write_text(sel_path, "")
    seal(SelectionResult(
        generation=gen, lo=lo, hi=hi, lo_source="config", n_pool=len(pool), n_unphysical=0,
        n_accurate=int((band == "accurate").sum()), n_candidate=int((band == "candidate").sum()),
        n_failed=int((band == "failed").sum()), n_selected=len(selected), n_requested=cfg.selection.n_select,
        per_walker={w: _fractions(band[walker == w]) for w in dict.fromkeys(walker.tolist())},
        overall=_fractions(band), selected_extxyz=run.rel(sel_path), decisions_csv=run.rel(d / "decisions.csv"),
    ), run.root).write(run.artifact_path(gen, "select"))
    return selected


def _write_label(run: RunDir, gen: int, selected: list[Atoms], n_fail: int) -> list[Atoms]:
    d = run.step_dir(gen, "label")
    d.mkdir(parents=True, exist_ok=True)
    outcomes, labeled = [], []
    for i, atoms in enumerate(selected):
        job = f"{i:06d}"
        if i < n_fail:
            cls = FAILURE_CLASSES[i % len(FAILURE_CLASSES)]
            outcomes.append(JobOutcome(job_id=job, frame_id=atoms.info["frame_id"], status="failed",
                                       failure_class=cls, message=f"synthetic {cls}"))
            continue
        frame = _labeled_frame(atoms.copy(), labeler="mock", theory=THEORY.key(), job_id=job)
        labeled.append(frame)
        outcomes.append(JobOutcome(job_id=job, frame_id=atoms.info["frame_id"], status="ok", runtime_s=0.1,
                                   energy_per_atom=frame.get_potential_energy() / len(frame)))
    path = d / "labeled.extxyz"
    if labeled:
        write_frames(path, labeled)
    else:
        atomic_write_text(path, "")
    failures: dict[str, int] = {}
    for o in outcomes:
        if o.failure_class:
            failures[o.failure_class] = failures.get(o.failure_class, 0) + 1
    seal(LabelingResult(
        generation=gen, labeler="mock", backend="local", theory=THEORY, outcomes=outcomes,
        n_ok=len(labeled), n_failed=len(outcomes) - len(labeled), failures_by_class=failures,
        labeled_extxyz=run.rel(path),
    ), run.root).write(run.artifact_path(gen, "label"))
    return labeled


def _write_merge(run: RunDir, gen: int, before: DatasetManifest, labeled: list[Atoms]) -> DatasetManifest:
    d = run.step_dir(gen, "merge")
    path = d / "dataset.extxyz"
    old = before.n_frames
    atomic_write_text(path, f"synthetic dataset of {old + len(labeled)} frames\n")
    m = DatasetManifest(
        generation=gen, dataset_extxyz=run.rel(path), n_frames=old + len(labeled),
        counts_by_source={**before.counts_by_source, f"gen{gen}": len(labeled)},
        counts_by_generation={**before.counts_by_generation, str(gen): len(labeled)},
        split_counts={**before.split_counts}, theory=THEORY,
        sha256=sha256_file(path),
        parent=run.rel(run.dataset_manifest_path(gen)),
    )
    m = seal(m, run.root)
    m.write(run.artifact_path(gen, "merge"))
    return m


def build_synthetic_run(
    root: Path,
    *,
    generations: int = 2,
    walkers: Sequence[tuple[str, str]] = (("md-300K-0", "md"), ("md-300K-1", "md"),
                                          ("udd-300K-0", "udd"), ("udd-300K-1", "udd")),
    n_steps: int = 60,
    collapse: Mapping[int, Mapping[str, int]] | None = None,
    n_select: Mapping[int, int] | int = 6,
    n_label_fail: int = 1,
    skip_steps: Mapping[int, Iterable[StepName]] | None = None,
    seed: int = 0,
) -> SyntheticRun:
    """Write a run directory with `generations` generations of synthetic steps.

    `collapse[gen][walker]` = step at which that walker collapses; `n_select` caps the
    selected frames (per generation when a mapping; 0 gives an empty selection);
    `skip_steps[gen]` = steps of that generation (and so everything after them) that
    never ran: their directories are not written.
    """
    rng = np.random.default_rng(seed)
    cfg = config_from_mapping({
        "name": "synthetic", "generations": generations,
        "explore": {"walkers": [{"kind": "md", "replicas": 2, "steps": n_steps, "sample_every": SAMPLE_EVERY},
                                {"kind": "udd", "replicas": 2, "steps": n_steps, "sample_every": SAMPLE_EVERY}]},
        "selection": {"n_select": 6, "lo": 0.05, "hi": 1.0},
    })
    run = RunDir(root)
    run.init(cfg)
    dataset = _write_seed(run, rng)
    collapse = collapse or {}
    skip_steps = skip_steps or {}
    order: tuple[StepName, ...] = ("train", "explore", "select", "label", "merge")
    for gen in range(generations):
        run.gen_dir(gen).mkdir(parents=True, exist_ok=True)
        skipped = set(skip_steps.get(gen, ()))
        first_skip = min((order.index(s) for s in skipped), default=len(order))
        done = order[:first_skip]
        records = []
        if "train" in done:
            _write_train(run, gen, dataset.n_frames, rng)
        pool: list[Atoms] = []
        results = []
        if "explore" in done:
            for name, kind in walkers:
                res, frames = _write_walker(run, gen, name, kind, n_steps, collapse.get(gen, {}).get(name), rng)
                results.append(res)
                pool += frames
            seal(ExplorationSummary(generation=gen, walkers=results), run.root).write(
                run.artifact_path(gen, "explore"))
        k = n_select.get(gen, 6) if isinstance(n_select, Mapping) else n_select
        selected = _write_select(run, cfg, gen, pool, k) if "select" in done else []
        labeled = _write_label(run, gen, selected, min(n_label_fail, len(selected))) if "label" in done else []
        if "merge" in done:
            dataset = _write_merge(run, gen, dataset, labeled)
        for step in order:
            records.append(StepRecord(step=step, status="done" if step in done else "pending",
                                      artifact=run.rel(run.artifact_path(gen, step)) if step in done else None,
                                      wall_time_s=float(rng.uniform(1, 20)) if step in done else None))
        GenerationRecord(generation=gen, steps=records).write(run.gen_dir(gen) / "generation.json")
    return SyntheticRun(run=run, cfg=cfg)
