"""The per-generation report: what each step of one generation did, as md/html/png/csv.

Every section reads one step's artifact and degrades to a visible note when that step
has not run (or its artifact or files are unusable), so a report builds from whatever
steps are done — e.g. a generation whose labeling failed still shows its exploration.
Every number shown is also in a CSV next to the report and in `GenerationReport.numbers`
(flat keys, the same ones the run summary and the Prefect artifacts use).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from ase import Atoms

from eip_al import calibrate
from eip_al.config import ALConfig
from eip_al.integrity import seal
from eip_al.io import FrameError, read_frames
from eip_al.metrics import atom_force_error, uq_metrics
from eip_al.report import figures
from eip_al.report.diversity import config_entropy, in_ranges, is_water, water_order_parameters
from eip_al.report.render import ReportWriter, format_value
from eip_al.rundir import RunDir, RunDirError, load_valid
from eip_al.schemas import (
    STEPS,
    Artifact,
    DatasetManifest,
    ExplorationResult,
    ExplorationSummary,
    GenerationRecord,
    GenerationReport,
    LabelingResult,
    SelectionResult,
    StepName,
    TrainingResult,
    ValidationMetrics,
)

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Artifact)
Number = float | int | str | None
Predictor = Callable[[Path, list[Atoms]], list[dict[str, Any]]]

LOG_REQUIRED = ("time_fs", "energy", "sigma")
KINDS = ("md", "udd")


def predict_for_audit(checkpoint: Path, frames: list[Atoms]) -> list[dict[str, Any]]:
    """Model predictions (energy, forces, σ arrays) of `checkpoint` on `frames`, on CPU.

    The one place the report touches the model; tests inject their own predictor.
    """
    from eip_al.calculator import EIPCalculator

    return EIPCalculator(checkpoint, device="cpu").predict_frames(frames)


# ============================================================================ helpers
def _clean(value: Any) -> Number:
    """A JSON-safe scalar for `numbers`: NaN/inf become None, numpy scalars plain."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | np.integer):
        return int(value)
    value = float(value)
    return value if np.isfinite(value) else None


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _load_step(run: RunDir, gen: int, step: StepName, cls: type[A]) -> tuple[A | None, str | None]:
    """The step's artifact, or None and a sentence saying why it is not usable."""
    path = run.artifact_path(gen, step)
    if not path.exists():
        return None, f"step `{step}` has not run (no `{run.rel(path)}`)"
    try:
        return cls.load(path), None
    except ValueError as exc:
        return None, f"step `{step}` artifact is invalid: {exc}"


def _read_optional_frames(run: RunDir, rel: str, *, labels: bool) -> tuple[list[Atoms], str | None]:
    """Frames of a file an artifact names; an empty or missing file gives [] and a reason."""
    path = run.abs(rel)
    if not path.exists():
        return [], f"`{rel}` not found"
    if path.stat().st_size == 0:
        return [], None
    try:
        return read_frames(path, require_labels=labels, require_cell=False), None
    except FrameError as exc:
        return [], str(exc)


@dataclass
class _Context:
    """What the sections share while one report is built."""

    cfg: ALConfig
    run: RunDir
    gen: int
    predict: Predictor | None
    w: ReportWriter
    numbers: dict[str, Number] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    invalid: set[str] = field(default_factory=set)  # steps whose artifact exists but is unusable
    train: TrainingResult | None = None
    walkers: list[ExplorationResult] = field(default_factory=list)
    selection: SelectionResult | None = None
    labeling: LabelingResult | None = None
    calibration: calibrate.Calibration | None = None
    _labelled: dict[str, tuple[list[Atoms], str | None]] = field(default_factory=dict)

    def labelled_frames(self, rel: str) -> tuple[list[Atoms], str | None]:
        """`_read_optional_frames(labels=True)`, read once per report: several sections use
        the same files (new labels, the dataset, the seed dataset). Callers only read them."""
        if rel not in self._labelled:
            self._labelled[rel] = _read_optional_frames(self.run, rel, labels=True)
        return self._labelled[rel]

    def put(self, **values: Any) -> None:
        for key, value in values.items():
            self.numbers[key] = _clean(value)

    def load(self, step: StepName, cls: type[A]) -> tuple[A | None, str | None]:
        """`_load_step`, remembering an existing but unusable artifact for the status table."""
        art, problem = _load_step(self.run, self.gen, step, cls)
        if art is None and self.run.artifact_path(self.gen, step).exists():
            self.invalid.add(step)
        return art, problem


# ============================================================================ sections
def _section_status(c: _Context) -> None:
    """Which steps are there, with wall times from the generation record."""
    record = load_valid(c.run.gen_dir(c.gen) / "generation.json", GenerationRecord)
    wall = {r.step: r.wall_time_s for r in record.steps} if record else {}
    rows = []
    for step in STEPS:
        if step == "report":
            continue
        path = c.run.artifact_path(c.gen, step)
        state = "missing" if not path.exists() else "invalid" if step in c.invalid else "done"
        rows.append({"step": step, "status": state, "wall_time_s": wall.get(step),
                     "artifact": c.run.rel(path)})
        c.put(**{f"wall_s.{step}": wall.get(step)})
    missing = [r["step"] for r in rows if r["status"] != "done"]
    c.put(missing_steps=", ".join(missing) if missing else None)
    c.w.heading("Steps")
    if missing:
        c.w.note(f"steps not done (or unusable) in this generation: {', '.join(missing)}; "
                 "the sections below show what is available.")
    c.w.table(pd.DataFrame(rows), "steps")


def _section_training(c: _Context) -> None:
    c.w.heading("Training")
    tr, problem = c.load("train", TrainingResult)
    if tr is None:
        c.w.note(f"{problem}; no training metrics, no selection audit.")
        return
    c.train = tr
    v = tr.valid
    c.put(n_train=tr.n_train, n_valid=tr.n_valid, epochs_run=tr.epochs_run, best_epoch=tr.best_epoch,
          valid_force_mae=v.force_mae, valid_force_rmse=v.force_rmse,
          valid_energy_mae_per_atom=v.energy_mae_per_atom, valid_sigma_mean=v.sigma_mean,
          valid_sigma_median=v.sigma_median,
          valid_aleatoric_mean=v.aleatoric_mean, valid_spearman_atom=v.spearman_atom,
          valid_roc_auc_atom=v.roc_auc_atom, train_wall_time_s=tr.wall_time_s,
          valid_miscalibration_area=v.miscalibration_area,
          valid_miscalibration_area_calibrated=v.miscalibration_area_calibrated)
    _training_calibration(c, tr)
    _tail_findings(c, v)
    c.w.text(f"Trained on {tr.n_train} frames ({tr.n_valid} validation) for {tr.epochs_run} epochs "
             f"on {tr.device}; best epoch {tr.best_epoch}, stopped by {tr.stopped_reason}"
             + (f", warm-started from `{tr.warm_started_from}`." if tr.warm_started_from else "."))
    rows = [
        ("n_train", tr.n_train), ("n_valid", tr.n_valid), ("epochs_run", tr.epochs_run),
        ("best_epoch", tr.best_epoch), ("wall_time_s", tr.wall_time_s),
        *((f"valid_{k}", val) for k, val in v.model_dump().items()),
    ]
    c.w.table(pd.DataFrame(rows, columns=["metric", "value"]), "training")
    path = c.run.abs(tr.metrics_csv)
    try:
        curves = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        c.w.note(f"per-epoch metrics `{tr.metrics_csv}` unreadable ({type(exc).__name__}); no curves.")
        return
    if "epoch" not in curves.columns:
        curves.insert(0, "epoch", np.arange(len(curves)))
    known = ["epoch"] + [p[0] for p in figures.TRAINING_PANELS if p[0] in curves.columns]
    curves = curves[known]
    for col in known[1:]:
        curves[col] = pd.to_numeric(curves[col], errors="coerce")
    if len(known) == 1 or curves.empty:
        c.w.note(f"`{tr.metrics_csv}` has no known metric columns; no curves.")
        return
    c.w.figure(figures.training_curves(curves, tr.best_epoch), "training_curves",
               "Training curves (dashed: best epoch).")
    c.w.table(curves, "training_curves", shown=False)


HEAVY_TAIL_RATIO = 3.0  # validation σ mean / median above this: a few extrapolating atoms dominate
RMSE_MAE_LIMIT = 2.5  # force RMSE / MAE above this: heavy-tailed errors (≈ 1.1–1.3 for well-behaved ones)


def _tail_findings(c: _Context, v: ValidationMetrics) -> None:
    """Warn when a few huge σ or errors make the means meaningless (robust statistics apply)."""
    if v.sigma_median and v.sigma_mean / v.sigma_median > HEAVY_TAIL_RATIO:
        c.findings.append(f"validation σ is heavy-tailed: mean {v.sigma_mean:.3g} vs median {v.sigma_median:.3g} "
                          "eV/Å (a few extrapolating atoms; trust the median and the calibration, not the mean)")
    if v.force_mae > 0 and v.force_rmse / v.force_mae > RMSE_MAE_LIMIT:
        c.findings.append(f"validation force errors are heavy-tailed: RMSE/MAE = {v.force_rmse / v.force_mae:.2g} "
                          "(some validation frames are far outside what the model learned)")


def _training_calibration(c: _Context, tr: TrainingResult) -> None:
    """The σ → expected-error map fitted after training (docs/calibration.md), if any."""
    if tr.calibration is None:
        c.w.text("No uncertainty calibration was fitted (validation split too small or an older model): "
                 "σ is shown on its raw scale only.")
        return
    try:
        cal = calibrate.Calibration.model_validate_json(c.run.abs(tr.calibration).read_text())
    except (OSError, ValueError) as exc:
        c.w.note(f"calibration `{tr.calibration}` unreadable ({type(exc).__name__}); raw σ only.")
        return
    c.calibration = cal
    c.put(calibration_method=cal.method, calibration_scale=cal.scale, calibration_n_samples=cal.n_samples)
    c.w.text(f"Calibration ({cal.method}, fitted on {cal.n_samples} validation atoms, σ "
             f"{cal.sigma_range[0]:.3g}–{cal.sigma_range[1]:.3g} eV/Å): expected per-atom force error "
             f"= map(σ_i); mean error / mean σ = {cal.scale:.3g}. "
             f"Miscalibration area on validation: raw σ {format_value(tr.valid.miscalibration_area)}, "
             f"calibrated {format_value(tr.valid.miscalibration_area_calibrated)} eV/Å (in-sample).")


def _read_log(run: RunDir, res: ExplorationResult) -> tuple[pd.DataFrame | None, str | None]:
    path = run.abs(res.log_csv)
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame(columns=list(LOG_REQUIRED))
    except (OSError, pd.errors.ParserError) as exc:
        return None, f"walker `{res.walker}`: log `{res.log_csv}` unreadable ({type(exc).__name__})"
    lacking = [col for col in LOG_REQUIRED if col not in df.columns]
    if lacking:
        return None, f"walker `{res.walker}`: log `{res.log_csv}` lacks column(s) {lacking}"
    for col in df.columns:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df, None


def _stable_time(res: ExplorationResult, df: pd.DataFrame | None) -> float:
    """Simulated time before the collapse (or the whole run when it did not collapse)."""
    if not res.collapsed:
        return res.simulated_time_fs
    if res.collapse_time_fs is not None:
        return res.collapse_time_fs
    return float(df["time_fs"].max()) if df is not None and len(df) else 0.0


def _walker_results(c: _Context) -> list[ExplorationResult]:
    """The summary's walkers, or — when the summary is missing — the per-walker JSONs."""
    summary, problem = c.load("explore", ExplorationSummary)
    if summary is not None:
        return summary.walkers
    found = []
    for path in sorted(c.run.step_dir(c.gen, "explore").glob("*.json")):
        if path.name != "artifact.json" and (res := load_valid(path, ExplorationResult)) is not None:
            found.append(res)
    if found:
        c.w.note(f"{problem}; showing the {len(found)} walker result(s) written so far.")
    else:
        c.w.note(f"{problem}; no walker results.")
    return found


def _section_exploration(c: _Context) -> None:
    c.w.heading("Exploration: energy and uncertainty vs time")
    walkers = _walker_results(c)
    c.walkers = walkers
    if not walkers:
        return
    logs: dict[str, pd.DataFrame] = {}
    rows = []
    for res in walkers:
        df, problem = _read_log(c.run, res)
        if problem:
            c.w.note(problem)
        else:
            logs[res.walker] = df
        stable = _stable_time(res, df)
        c.put(**{f"stable_time_fs.{res.walker}": stable})
        has = df is not None and len(df) > 0
        bias = df["bias_ratio"] if has and "bias_ratio" in df.columns else None
        rows.append({
            "walker": res.walker, "kind": res.kind, "temperature_K": res.temperature_K,
            "steps_run": res.steps_run, "steps_requested": res.steps_requested,
            "simulated_time_fs": res.simulated_time_fs, "collapsed": res.collapsed,
            "collapse_time_fs": res.collapse_time_fs, "collapse_reason": res.collapse_reason,
            "stable_time_fs": stable, "n_candidates": res.n_candidates,
            "energy_mean": float(df["energy"].mean()) if has else None,
            "energy_std": float(df["energy"].std(ddof=0)) if has else None,
            "sigma_config_mean": float(df["sigma"].mean()) if has else None,
            "sigma_config_max": float(df["sigma"].max()) if has else None,
            "sigma_atom_max": float(df["sigma_max"].max()) if has and "sigma_max" in df.columns else None,
            "bias_ratio_mean": float(bias.mean()) if bias is not None and res.kind == "udd" else None,
            "bias_ratio_atom_median": res.bias_ratio_median, "bias_ratio_atom_max": res.bias_ratio_max,
            "wall_time_s": res.wall_time_s,
        })
    table = pd.DataFrame(rows)
    n_coll = int(table["collapsed"].sum())
    c.put(n_walkers=len(walkers), n_collapsed=n_coll,
          explore_wall_time_s_sum=float(table["wall_time_s"].sum()))
    for kind in KINDS:
        sub = table[table["kind"] == kind]
        if len(sub):
            kind_logs = [logs[w] for w in sub["walker"] if w in logs and len(logs[w])]
            sig = pd.concat([d["sigma"] for d in kind_logs]) if kind_logs else pd.Series(dtype=float)
            c.put(**{f"{kind}_stable_time_fs_mean": float(sub["stable_time_fs"].mean()),
                     f"{kind}_n_collapsed": int(sub["collapsed"].sum()),
                     f"{kind}_sigma_mean": float(sig.mean()) if len(sig) else None})
    if n_coll == len(walkers):
        first = table["stable_time_fs"].min()
        c.w.note(f"all {len(walkers)} walkers collapsed (earliest after {first:.4g} fs): the model "
                 "is not yet stable; the frames before each collapse are still candidates.")
        c.findings.append(f"all {len(walkers)} walkers collapsed")
    elif n_coll:
        c.findings.append(f"{n_coll} of {len(walkers)} walkers collapsed")
    else:
        c.findings.append(f"all {len(walkers)} walkers stable for their full run")
    lo, hi = (c.selection.lo, c.selection.hi) if c.selection else (c.cfg.selection.lo, c.cfg.selection.hi)
    fig = figures.energy_sigma_vs_time(
        logs, {r.walker: r.kind for r in walkers},
        {r.walker: (_stable_time(r, logs.get(r.walker)) if r.collapsed else None) for r in walkers},
        lo, hi,
    )
    c.w.figure(fig, "energy_sigma", "Unbiased potential energy (top) and σ_config (bottom) vs time; "
               "MD left, eIP-UDD right; red × marks a collapse; dashed/dotted: selection lo/hi.")
    c.w.text("Per walker (stable time = time before a collapse; σ statistics over the logged steps; "
             "energy mean/std (population std), steps and wall time in the CSV):")
    c.w.table(table, "walkers", columns=[
        "walker", "kind", "temperature_K", "simulated_time_fs", "collapsed", "collapse_time_fs",
        "collapse_reason", "stable_time_fs", "n_candidates", "sigma_config_mean", "sigma_config_max",
        "bias_ratio_mean", "bias_ratio_atom_median", "bias_ratio_atom_max"])
    screens = {tuple(sorted(r.min_pair_distance.items())) for r in walkers if r.min_pair_distance}
    if len(screens) == 1:
        c.w.text("Minimum pair distances (walker collapse rule and selection screen): "
                 + ", ".join(f"{k} {v:.3g} Å" for k, v in next(iter(screens))) + ".")
    _section_frames(c)


def _section_frames(c: _Context) -> None:
    """Diversity (configurational entropy) and the aleatoric/epistemic split of explored frames."""
    rep = c.cfg.report
    entropy_rows = []
    op_samples: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    entropies: dict[str, float | None] = {}
    split: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    non_water = False
    for res in c.walkers:
        frames, problem = _read_optional_frames(c.run, res.frames_extxyz, labels=False)
        if problem:
            c.w.note(f"walker `{res.walker}`: frames unusable: {problem}")
        for atoms in frames:
            if "uncertainty" in atoms.arrays and "aleatoric_components" in atoms.arrays:
                epi, ale = split.setdefault(res.kind, ([], []))
                epi.append(np.asarray(atoms.arrays["uncertainty"], dtype=float))
                ale.append(np.linalg.norm(np.asarray(atoms.arrays["aleatoric_components"], float), axis=1))
        row: dict[str, Any] = {"walker": res.walker, "kind": res.kind, "n_frames": len(frames)}
        if frames and not all(is_water(a) for a in frames):
            non_water = True
            continue
        ops = water_order_parameters(frames)
        inside = in_ranges(ops.angle_deg, ops.bond_A, rep.angle_range_deg, rep.bond_range_A)
        s = config_entropy(ops.angle_deg, ops.bond_A, rep.entropy_bins, rep.angle_range_deg,
                           rep.bond_range_A)
        row.update(n_samples=int(ops.angle_deg.size), n_outside_grid=int((~inside).sum()),
                   n_molecules_skipped=ops.n_molecules_skipped, entropy=s)
        entropy_rows.append(row)
        entropies[res.walker] = s
        op_samples[res.walker] = (ops.angle_deg, ops.bond_A)
        c.put(**{f"entropy.{res.walker}": s})

    c.w.heading("Exploration diversity (normalized configurational entropy)")
    if non_water:
        c.w.note("the system is not water (H and O only, two H per O), so the water order "
                 "parameters do not apply; diversity is not computed.")
    elif entropy_rows:
        table = pd.DataFrame(entropy_rows)
        for kind in KINDS:
            sub = table[table["kind"] == kind]
            if len(sub):
                c.put(**{f"{kind}_entropy_mean": _mean([_clean(x) for x in sub["entropy"]])})
        lo_a, hi_a = rep.angle_range_deg
        lo_b, hi_b = rep.bond_range_A
        c.w.text(f"S = −Σ p log p / (2 log Ne) of the (H–O–H angle, O–H bond) samples of each walker "
                 f"on a fixed {rep.entropy_bins}×{rep.entropy_bins} grid (angle {lo_a:g}–{hi_a:g}°, "
                 f"bond {lo_b:g}–{hi_b:g} Å); one sample per O–H bond. 1 = every cell equally "
                 "visited, 0 = one cell. Samples outside the grid are counted, not used.")
        c.w.table(table, "entropy")
        fig = figures.order_parameter_maps(op_samples, entropies, rep.entropy_bins, rep.angle_range_deg,
                                           rep.bond_range_A, ("H–O–H angle (°)", "O–H bond (Å)"))
        c.w.figure(fig, "order_parameters", "Order-parameter histograms (log counts) on the entropy grid.")
        md, udd = c.numbers.get("md_entropy_mean"), c.numbers.get("udd_entropy_mean")
        if md is not None and udd is not None:
            c.findings.append(f"diversity S: MD {md:.3f}, UDD {udd:.3f}")

    c.w.heading("Aleatoric vs epistemic uncertainty (explored frames)")
    if not split:
        c.w.note("the explored frames carry no per-atom `uncertainty`/`aleatoric_components` arrays.")
        return
    arrays = {k: (np.concatenate(e), np.concatenate(a)) for k, (e, a) in split.items()}
    rows = []
    for kind, (epi, ale) in arrays.items():
        rho = uq_metrics(epi, ale)["spearman"] if epi.size >= 3 else None
        rows.append({"kind": kind, "n_atoms": int(epi.size), "epistemic_mean": float(epi.mean()),
                     "epistemic_median": float(np.median(epi)), "aleatoric_mean": float(ale.mean()),
                     "aleatoric_median": float(np.median(ale)), "spearman_epistemic_aleatoric": rho})
    all_epi = np.concatenate([e for e, _ in arrays.values()])
    all_ale = np.concatenate([a for _, a in arrays.values()])
    c.put(pool_epistemic_atom_mean=float(all_epi.mean()), pool_aleatoric_atom_mean=float(all_ale.mean()))
    c.w.text("Aleatoric σ (label noise the model expects) vs epistemic σ (what selection and UDD use), "
             "per atom: σ = ‖(σ_x, σ_y, σ_z)‖. High aleatoric σ flags noisy labels, not missing data.")
    c.w.table(pd.DataFrame(rows), "uncertainty_split")
    c.w.figure(figures.aleatoric_vs_epistemic(arrays), "aleatoric_epistemic",
               "Per-atom aleatoric vs epistemic σ of the explored frames.")


def _sigma_bins(sigma: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, bool]:
    """Histogram edges covering the pool and lo/hi: log-spaced when all σ are positive."""
    vals = sigma[np.isfinite(sigma)]
    a = min([lo, *vals.tolist()]) if vals.size else lo
    b = max([hi, *vals.tolist()]) if vals.size else hi
    if a > 0:
        return np.geomspace(a, b * (1 + 1e-9), 41), True
    return np.linspace(a, b * (1 + 1e-9) + 1e-12, 41), False


def _section_selection(c: _Context) -> None:
    c.w.heading("Selection")
    sel, problem = c.load("select", SelectionResult)
    if sel is None:
        c.w.note(f"{problem}; no trust fractions, no σ histograms.")
        return
    c.selection = sel
    o = sel.overall
    c.put(lo=sel.lo, hi=sel.hi, lo_source=sel.lo_source, n_pool=sel.n_pool, n_unphysical=sel.n_unphysical,
          n_selected=sel.n_selected, n_requested=sel.n_requested, frac_accurate=o.accurate,
          frac_candidate=o.candidate, frac_failed=o.failed, frac_unphysical=o.unphysical,
          converged=sel.converged, selection_scale=sel.scale, lo_raw=sel.lo_raw, hi_raw=sel.hi_raw,
          lo_calibrated=sel.lo_calibrated, hi_calibrated=sel.hi_calibrated, n_label_noise=sel.n_label_noise)
    c.findings.append(f"trust fractions: accurate {o.accurate:.1%}, candidate {o.candidate:.1%}, "
                      f"failed {o.failed:.1%}; {sel.n_selected} of {sel.n_pool} frames selected")
    if sel.converged:
        c.findings.append(f"converged: {sel.converged_reason or 'candidate fraction below the limit'}")
    if sel.n_unphysical:
        by = ", ".join(f"{k} {v}" for k, v in sel.unphysical_by_reason.items()) or "reasons not recorded"
        c.put(**{f"unphysical.{k}": v for k, v in sel.unphysical_by_reason.items()})
        c.findings.append(f"{sel.n_unphysical} pooled frame(s) refused as unphysical, never labelled ({by})")
    if sel.n_selected == 0:
        c.w.note(f"no frames were selected in this generation (pool of {sel.n_pool}, "
                 f"{sel.n_candidate} candidates): nothing to label.")
    frac_rows = [{"walker": w, "n": f.n, "accurate": f.accurate, "candidate": f.candidate,
                  "failed": f.failed, "unphysical": f.unphysical} for w, f in sel.per_walker.items()]
    frac_rows.append({"walker": "overall", "n": o.n, "accurate": o.accurate, "candidate": o.candidate,
                      "failed": o.failed, "unphysical": o.unphysical})
    fractions = pd.DataFrame(frac_rows)
    c.w.text(_bands_text(sel))
    c.w.table(fractions, "trust_fractions")
    c.w.figure(figures.trust_fraction_bars(fractions), "trust_fractions",
               "Accurate / candidate / failed / unphysical fraction per walker and overall.")

    path = c.run.abs(sel.decisions_csv)
    try:
        dec = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        c.w.note(f"decisions `{sel.decisions_csv}` unreadable ({type(exc).__name__}); no σ histograms.")
        return
    if not {"sigma", "decision"} <= set(dec.columns):
        c.w.note(f"decisions `{sel.decisions_csv}` lacks the sigma/decision columns; no σ histograms.")
        return
    column = "sigma_calibrated" if sel.scale == "calibrated" and "sigma_calibrated" in dec.columns else "sigma"
    pool = pd.to_numeric(dec[column], errors="coerce").to_numpy(dtype=float)
    chosen = dec["decision"].astype(str).str.lower().eq("selected").to_numpy()
    _label_noise_table(c, sel, dec)
    picked = pool[chosen]
    finite = np.isfinite(pool)
    stats = {
        "pool_sigma_mean": pool[finite].mean() if finite.any() else None,
        "pool_sigma_median": np.median(pool[finite]) if finite.any() else None,
        "pool_sigma_p90": np.quantile(pool[finite], 0.9) if finite.any() else None,
        "pool_sigma_max": pool[finite].max() if finite.any() else None,
        "selected_sigma_mean": picked.mean() if picked.size else None,
        "selected_sigma_min": picked.min() if picked.size else None,
    }
    c.put(**stats)
    edges, log_x = _sigma_bins(pool, sel.lo, sel.hi)
    n_pool, _ = np.histogram(pool[finite], bins=edges)
    n_sel, _ = np.histogram(picked[np.isfinite(picked)], bins=edges)
    c.w.table(pd.DataFrame([{"quantity": k, "value": _clean(v)} for k, v in stats.items()]),
              "sigma_stats")
    xlabel = ("calibrated σ_config: expected force error (eV/Å)" if column == "sigma_calibrated"
              else "σ_config (eV/Å)")
    c.w.figure(figures.sigma_histograms(edges, n_pool, n_sel, sel.lo, sel.hi, log_x, xlabel), "sigma_hist",
               f"{xlabel.split(' (')[0]} of all pooled frames vs the selected ones, with the lo/hi trust levels.")
    c.w.table(pd.DataFrame({"bin_lo": edges[:-1], "bin_hi": edges[1:], "n_pool": n_pool,
                            "n_selected": n_sel}), "sigma_hist", shown=False)


def _bands_text(sel: SelectionResult) -> str:
    """The trust levels on the scale they were applied on, and on the other one when known."""
    def pair(lo: float | None, hi: float | None) -> str:
        return "unknown (no calibration)" if lo is None or hi is None else f"lo = {lo:.4g}, hi = {hi:.4g} eV/Å"

    raw, cal = pair(sel.lo_raw, sel.hi_raw), pair(sel.lo_calibrated, sel.hi_calibrated)
    if sel.scale == "calibrated":
        return (f"Trust bands on the calibrated σ_config (expected mean per-atom force error): accurate < lo = "
                f"{sel.lo:.4g} eV/Å ≤ candidate < hi = {sel.hi:.4g} eV/Å ≤ failed; on the raw σ scale about {raw} "
                "(inverse of the map). Unphysical frames (geometry filters) count apart.")
    return (f"Trust bands on raw σ_config: accurate < lo = {sel.lo:.4g} eV/Å ({sel.lo_source}) ≤ candidate "
            f"< hi = {sel.hi:.4g} eV/Å ≤ failed; as expected force error (calibrated) about {cal}. "
            "Unphysical frames (geometry filters) count apart.")


def _label_noise_table(c: _Context, sel: SelectionResult, dec: pd.DataFrame) -> None:
    """Frames flagged as label noise (high aleatoric, low epistemic σ): never selected."""
    if sel.noise_aleatoric_min is None:
        c.w.text("Label-noise flags: off (no training result with a validation aleatoric σ, or "
                 "`selection.noise_aleatoric_factor: null`).")
        return
    flagged = dec[dec["label_noise"].astype(str).str.lower().isin(("true", "1"))] if "label_noise" in dec else dec[:0]
    ratio = (f"≤ {sel.noise_max_epistemic_ratio:.3g} × aleatoric" if sel.noise_max_epistemic_ratio is not None
             else "no larger than the configured multiple of aleatoric")
    c.w.text(f"Label-noise flags: aleatoric σ_config ≥ {sel.noise_aleatoric_min:.4g} eV/Å and epistemic σ_config "
             f"{ratio}; {sel.n_label_noise} of {sel.n_pool} pooled frames "
             "flagged (candidates among them were not selected: more data will not help there).")
    if sel.n_label_noise:
        c.findings.append(f"label noise suspected in {sel.n_label_noise} pooled frame(s) (aleatoric σ ≥ "
                          f"{sel.noise_aleatoric_min:.3g} eV/Å); not selected")
        cols = [k for k in ("frame_id", "walker", "step", "sigma", "aleatoric", "band", "reason") if k in flagged]
        c.w.table(flagged[cols].reset_index(drop=True), "label_noise")


def _section_labeling(c: _Context) -> None:
    c.w.heading("Labeling")
    la, problem = c.load("label", LabelingResult)
    if la is None:
        c.w.note(f"{problem}; no labels, no selection audit.")
        return
    c.labeling = la
    failed = Counter(o.failure_class or "unclassified" for o in la.outcomes if o.status == "failed")
    n_ok = sum(1 for o in la.outcomes if o.status == "ok")
    c.put(n_label_jobs=len(la.outcomes), n_label_ok=n_ok, n_label_failed=sum(failed.values()),
          label_budget_exceeded=la.budget_exceeded)
    c.put(**{f"label_failures.{k}": v for k, v in sorted(failed.items())})
    c.w.text(f"{len(la.outcomes)} jobs with `{la.labeler}` ({la.backend} backend, theory "
             f"{la.theory.code}/{la.theory.method}): {n_ok} ok, {sum(failed.values())} failed.")
    if la.budget_exceeded:
        c.w.note("the labeling failure budget was exceeded.")
    n_quarantined = failed.get("outlier_forces", 0)
    c.put(n_label_quarantined=n_quarantined)
    if n_quarantined:
        c.findings.append(f"{n_quarantined} label(s) quarantined as force outliers (max |F| above "
                          f"{la.outlier_force_limit:.3g} eV/Å), not merged: `{la.quarantine_extxyz}`")
    if failed:
        c.findings.append("labeling failures: " + ", ".join(f"{k} {v}" for k, v in sorted(failed.items())))
    rows = [{"outcome": "ok", "count": n_ok}] + [
        {"outcome": f"failed: {k}", "count": v} for k, v in sorted(failed.items())]
    c.w.table(pd.DataFrame(rows), "labeling")
    _label_forces(c, la)


HIGH_FORCE_FACTOR = 3.0  # new labels above this × the dataset's 99th-percentile |F_i| are reported


def _label_forces(c: _Context, la: LabelingResult) -> None:
    """Force sizes of the new labels vs the dataset they join: close contacts found by
    exploration (e.g. a strong UDD bias) show up as labels far above anything in the data,
    and such frames weigh heavily in the next training."""
    new, _ = c.labelled_frames(la.labeled_extxyz)
    try:
        old, _ = c.labelled_frames(c.run.dataset_for(c.gen).dataset_extxyz)
    except RunDirError:
        old = []
    if not new or not old:
        return
    new_max = np.array([np.linalg.norm(a.get_forces(), axis=1).max() for a in new])
    ref = float(np.percentile(np.concatenate([np.linalg.norm(a.get_forces(), axis=1) for a in old]), 99))
    high = int(np.count_nonzero(new_max > HIGH_FORCE_FACTOR * ref))
    c.put(label_force_max=float(new_max.max()), dataset_force_p99=ref, n_label_high_force=high)
    c.w.text(f"Largest per-atom force of the new labels: median {np.median(new_max):.3g}, max "
             f"{new_max.max():.3g} eV/Å; the dataset they join: 99th percentile {ref:.3g} eV/Å.")
    if high:
        c.findings.append(f"{high} new label(s) with a per-atom force above {HIGH_FORCE_FACTOR:g}× the dataset's "
                          f"99th percentile ({ref:.3g} eV/Å), up to {new_max.max():.3g} eV/Å: close contacts that "
                          "will weigh heavily in training (check the exploration, e.g. the UDD bias, if unexpected)")


def _validated_predictions(preds: list[dict[str, Any]], frames: list[Atoms]) -> list[dict[str, Any]]:
    if len(preds) != len(frames):
        raise ValueError(f"predictor returned {len(preds)} results for {len(frames)} frames")
    for i, (p, atoms) in enumerate(zip(preds, frames, strict=True)):
        n = len(atoms)
        if np.shape(p.get("forces")) != (n, 3) or np.shape(p.get("uncertainty")) != (n,):
            raise ValueError(f"prediction {i}: forces must be ({n}, 3) and uncertainty ({n},)")
    return preds


@dataclass
class AuditData:
    """Per-atom and per-frame errors and σ of the model on a labelled set of frames."""

    atom_sigma: np.ndarray
    atom_error: np.ndarray
    frame_sigma: np.ndarray
    frame_error: np.ndarray
    e_ref: np.ndarray  # eV/atom
    e_pred: np.ndarray
    f_ref: np.ndarray  # flattened components
    f_pred: np.ndarray
    aleatoric: np.ndarray  # per atom, may be empty
    atom_calibrated: np.ndarray = field(default_factory=lambda: np.empty(0))  # expected error, may be empty


def audit_arrays(
    frames: list[Atoms], preds: list[dict[str, Any]], calibration: calibrate.Calibration | None = None
) -> AuditData:
    """Errors of predictions against the frames' labels (σ_i vs ‖ΔF_i‖ as in docs §4).

    The calibrated expected error per atom comes from the predictions
    (`calibrated_uncertainty`) or, when they lack it, from `calibration` applied to σ_i.
    """
    preds = _validated_predictions(preds, frames)
    a_sig, a_err, f_sig, f_err, e_ref, e_pred, fr, fp, ale = [], [], [], [], [], [], [], [], []
    for atoms, p in zip(frames, preds, strict=True):
        ref_f = atoms.get_forces()
        pred_f = np.asarray(p["forces"], dtype=float)
        err = atom_force_error(pred_f, ref_f)
        sig = np.asarray(p["uncertainty"], dtype=float)
        a_sig.append(sig)
        a_err.append(err)
        f_sig.append(float(sig.mean()))
        f_err.append(float(err.mean()))
        e_ref.append(atoms.get_potential_energy() / len(atoms))
        e_pred.append(float(p["energy"]) / len(atoms))
        fr.append(ref_f.ravel())
        fp.append(pred_f.ravel())
        if "aleatoric_components" in p:
            ale.append(np.linalg.norm(np.asarray(p["aleatoric_components"], dtype=float), axis=1))
    sig_all = np.concatenate(a_sig)
    if all("calibrated_uncertainty" in p for p in preds):
        cal = np.concatenate([np.asarray(p["calibrated_uncertainty"], dtype=float) for p in preds])
    else:
        cal = calibration.apply(sig_all) if calibration is not None else np.empty(0)
    return AuditData(sig_all, np.concatenate(a_err), np.array(f_sig), np.array(f_err),
                     np.array(e_ref), np.array(e_pred), np.concatenate(fr), np.concatenate(fp),
                     np.concatenate(ale) if ale else np.empty(0), cal)


def audit_metrics(d: AuditData) -> dict[str, float | int | None]:
    """Accuracy and uncertainty-ranking quality (Spearman, ROC-AUC top-20 %) of an audit set."""
    atom = uq_metrics(d.atom_sigma, d.atom_error)
    conf = uq_metrics(d.frame_sigma, d.frame_error)
    diff = d.f_pred - d.f_ref
    return {
        "n_frames": int(d.frame_sigma.size), "n_atoms": int(d.atom_sigma.size),
        "energy_mae_per_atom": float(np.mean(np.abs(d.e_pred - d.e_ref))),
        "force_mae": float(np.mean(np.abs(diff))), "force_rmse": float(np.sqrt(np.mean(diff**2))),
        "sigma_mean": float(d.atom_sigma.mean()),
        "aleatoric_mean": float(d.aleatoric.mean()) if d.aleatoric.size else None,
        "spearman_atom": atom["spearman"], "roc_auc_atom": atom["roc_auc"],
        "spearman_config": conf["spearman"], "roc_auc_config": conf["roc_auc"],
        "miscalibration_area": calibrate.miscalibration_area(*calibrate.calibration_curve(d.atom_sigma, d.atom_error)),
        "miscalibration_area_calibrated": (
            calibrate.miscalibration_area(*calibrate.calibration_curve(d.atom_calibrated, d.atom_error))
            if d.atom_calibrated.size else None),
    }


def _fixed_test_frames(c: _Context) -> tuple[list[Atoms], str | None]:
    """The seed dataset's test split: the same frames for every generation."""
    seed = load_valid(c.run.seed_dir / "artifact.json", DatasetManifest)
    if seed is None:
        return [], "no valid seed dataset manifest"
    frames, problem = c.labelled_frames(seed.dataset_extxyz)
    if problem:
        return [], problem
    test = [a for a in frames if a.info.get("split") == "test"]
    return test, None if test else "the seed dataset has no frames with split = test"


def _validation_frames(c: _Context) -> list[Atoms]:
    """The validation split this generation's model trained with (its calibration's data)."""
    try:
        rel = c.run.dataset_for(c.gen).dataset_extxyz
    except RunDirError:
        return []
    frames, _ = c.labelled_frames(rel)
    return [a for a in frames if a.info.get("split") == "valid"]


def _section_audit(c: _Context) -> None:
    c.w.heading("Selection audit: did high σ mean high error?")
    if not c.cfg.report.audit:
        c.w.note("the audit is switched off (`report.audit: false`).")
        return
    if c.predict is None:
        c.w.note("no predictor was given; audit skipped.")
        return
    if c.train is None:
        c.w.note("no model for this generation (train step missing); audit skipped.")
        return
    checkpoint = c.run.abs(c.train.checkpoint)
    sets: dict[str, list[Atoms]] = {}
    if c.labeling is None:
        c.w.note("no labels for this generation; audit on new labels skipped.")
    elif not c.labeling.n_ok:
        c.w.note("no frame was labeled successfully in this generation; audit on new labels skipped.")
    else:
        frames, problem = c.labelled_frames(c.labeling.labeled_extxyz)
        if problem or not frames:
            c.w.note(f"labeled frames unusable: {problem or 'file is empty'}; audit on new labels skipped.")
        else:
            sets["new_labels"] = frames
    test, problem = _fixed_test_frames(c)
    if test:
        sets["fixed_test"] = test
    else:
        c.w.note(f"fixed test split: {problem}.")
    if not sets:
        return
    valid = _validation_frames(c)
    if valid:  # calibration curve only: its metrics are the training section's valid_* numbers
        sets["validation"] = valid
    everything = [a for frames in sets.values() for a in frames]  # one model load for all sets
    try:
        preds = _validated_predictions(c.predict(checkpoint, everything), everything)
    except (ImportError, OSError, RuntimeError, ValueError, KeyError) as exc:
        # A report must not die with the model: say why the audit is missing, keep the rest.
        c.w.note(f"model predictions failed ({type(exc).__name__}: {exc}); audit skipped.")
        return
    rows, data, start = [], {}, 0
    for name, frames in sets.items():
        d = audit_arrays(frames, preds[start:start + len(frames)], c.calibration)
        if name == "new_labels":
            _write_selection_audit(c, frames, preds[start:start + len(frames)])
        start += len(frames)
        data[name] = d
        if name != "validation":
            rows.append({"set": name, **audit_metrics(d)})
    table = pd.DataFrame(rows)
    prefix = {"new_labels": "audit", "fixed_test": "test"}
    for row in rows:
        p = prefix[row["set"]]
        c.put(**{f"{p}_{k}": v for k, v in row.items() if k != "set"})
    c.w.text("Model of this generation vs the labels. `new_labels`: the frames it selected (the "
             "audit); `fixed_test`: the seed dataset's test split, identical every generation. "
             "Spearman and ROC-AUC rank σ against the force error (ROC-AUC: top 20 % errors are bad).")
    c.w.table(table, "audit")
    _calibration_figure(c, data)
    if "new_labels" in data:
        d = data["new_labels"]
        m = rows[[r["set"] for r in rows].index("new_labels")]
        rho, auc = m["spearman_atom"], m["roc_auc_atom"]
        c.findings.append(f"audit on {m['n_frames']} new labels: force MAE {m['force_mae']:.4g} eV/Å, "
                          f"Spearman {format_value(rho)}, ROC-AUC {format_value(auc)}")
        c.w.figure(figures.parity(d.e_ref, d.e_pred, d.f_ref, d.f_pred,
                                  f"newly labeled frames ({m['n_frames']})"),
                   "parity", "Parity of energies per atom and force components on the newly labeled frames.")
        c.w.figure(figures.error_vs_sigma(d.atom_sigma, d.atom_error,
                                          f"per atom: Spearman {format_value(rho)}, ROC-AUC {format_value(auc)}"),
                   "error_vs_sigma", "Per-atom force error vs σ_i on the newly labeled frames.")
        frames = sets["new_labels"]
        c.w.table(pd.DataFrame({
            "frame_id": [a.info.get("frame_id") for a in frames],
            "walker": [a.info.get("walker") for a in frames],
            "sigma_config": d.frame_sigma, "force_error_config": d.frame_error,
            "energy_error_per_atom": d.e_pred - d.e_ref,
        }), "audit_frames", shown=False)


def _write_selection_audit(c: _Context, frames: list[Atoms], preds: list[dict[str, Any]]) -> None:
    """Store the fresh-label audit (`gen-XXX/audit/`) the stop rule reads, from these predictions."""
    path = calibrate.audit_dir(c.run, c.gen) / "artifact.json"
    if c.train is None or c.labeling is None or load_valid(path, calibrate.SelectionAudit) is not None:
        return
    audit = calibrate.selection_audit_from_predictions(
        c.run, c.gen, c.train, c.labeling.labeled_extxyz, frames, preds, c.calibration
    )
    seal(audit, c.run.root).write(path)


def _calibration_figure(c: _Context, data: dict[str, AuditData]) -> None:
    """Calibration curves (mean error per σ bin) of each audit set, raw and calibrated."""
    label = {"new_labels": "new labels", "fixed_test": "fixed test", "validation": "validation (in-sample)"}
    curves, rows = {}, []
    for name, d in data.items():
        for scale, pred in (("raw σ", d.atom_sigma), ("calibrated", d.atom_calibrated)):
            if not pred.size:
                continue
            x, y, n = calibrate.calibration_curve(pred, d.atom_error)
            curves[f"{label[name]}: {scale}"] = (x, y, n)
            rows += [{"set": name, "scale": scale, "bin_predicted": a, "bin_error": b, "n_atoms": k}
                     for a, b, k in zip(x, y, n, strict=True)]
    if not curves:
        return
    c.w.text("Calibration: atoms in 10 equal-count bins of the prediction (raw σ_i, or the calibrated expected "
             "error); a calibrated model lies on the diagonal. Miscalibration area = count-weighted mean "
             "|mean error − prediction| over the bins (eV/Å), in the table above. The validation split is "
             "where the calibration was fitted, so its calibrated curve is in-sample.")
    c.w.figure(figures.calibration_curves(curves, "per-atom force error vs prediction"), "calibration",
               "Calibration curves: mean realized force error per bin vs the bin's mean prediction.")
    c.w.table(pd.DataFrame(rows), "calibration_curves", shown=False)


def _section_convergence(c: _Context) -> None:
    """Whether the run stops after this generation, and by which criterion."""
    c.w.heading("Convergence")
    sel_cfg = c.cfg.selection
    tol = sel_cfg.converge_force_error
    rule = (f"candidate fraction (and failed + unphysical) below {sel_cfg.converge_candidate_fraction:g}, no "
            f"collapsed walker, for {sel_cfg.converge_generations} consecutive generation(s)")
    if tol is not None:
        rule += f", and the fresh labels' mean per-config force error below {tol:g} eV/Å"
    if c.selection is None:
        c.w.note(f"no selection result yet; stop rule ({rule}) not evaluated.")
        return
    try:
        decision = calibrate.stop_decision(c.cfg, c.run, c.gen, predict=c.predict if c.cfg.report.audit else None)
    except (ImportError, OSError, RuntimeError, ValueError, KeyError) as exc:
        c.w.note(f"stop rule not evaluated ({type(exc).__name__}: {exc}).")
        return
    last = c.gen >= c.cfg.generations - 1
    if decision.stop:
        verdict = f"the run stops after this generation — criterion `{decision.criterion}`: {decision.reason}"
        criterion = decision.criterion
    elif last:
        verdict = (f"the run ends after this generation because the configured number of generations "
                   f"({c.cfg.generations}) is reached; the convergence rule was not met")
        criterion = "max_generations"
    else:
        verdict = "not converged: the run goes on"
        criterion = None
    c.put(stop=decision.stop, stop_criterion=criterion)
    audit = load_valid(calibrate.audit_dir(c.run, c.gen) / "artifact.json", calibrate.SelectionAudit)
    if audit is not None:
        c.put(fresh_force_error=audit.force_error_config_mean, fresh_force_error_max=audit.force_error_config_max,
              fresh_calibrated_mean=audit.calibrated_config_mean)
    c.w.text(f"Stop rule: {rule}. Verdict: {verdict}.")
    if decision.stop or last:
        c.findings.append(verdict)
    if decision.rows:
        c.w.table(pd.DataFrame(list(decision.rows)), "convergence")


def _section_dataset(c: _Context) -> None:
    c.w.heading("Dataset")
    try:
        before = c.run.dataset_for(c.gen)
    except RunDirError:
        before = None
    me, problem = c.load("merge", DatasetManifest)
    c.put(dataset_in_frames=before.n_frames if before else None)
    if me is None:
        c.w.note(f"{problem}; the dataset did not grow yet.")
        if before:
            c.w.text(f"This generation trained on {before.n_frames} frames.")
        return
    c.put(dataset_out_frames=me.n_frames, n_duplicates_dropped=me.n_duplicates_dropped,
          dataset_added=(me.n_frames - before.n_frames) if before else None)
    rows = [("frames (before)", before.n_frames if before else None), ("frames (after)", me.n_frames),
            ("duplicates dropped", me.n_duplicates_dropped)]
    rows += [(f"source {k}", v) for k, v in sorted(me.counts_by_source.items())]
    rows += [(f"split {k}", v) for k, v in sorted(me.split_counts.items())]
    c.w.table(pd.DataFrame(rows, columns=["quantity", "value"]), "dataset")
    c.findings.append(f"dataset {before.n_frames if before else '?'} → {me.n_frames} frames")


# ============================================================================ entry point
def report_generation(
    cfg: ALConfig, run: RunDir, gen: int, *, predict: Predictor | None = predict_for_audit
) -> GenerationReport:
    """Write generation `gen`'s report (md, html, png, csv) into `run.step_dir(gen, 'report')`.

    Builds from whatever steps are done; `predict` gives the model's predictions for the
    selection audit and the fixed test split (None skips both). Returns the artifact; the
    caller writes it (e.g. with `run_step`).
    """
    if not run.gen_dir(gen).is_dir():
        raise RunDirError(f"{run.root}: generation {gen} has no directory ({run.gen_dir(gen).name})")
    out_dir = run.step_dir(gen, "report")
    out_dir.mkdir(parents=True, exist_ok=True)
    c = _Context(cfg=cfg, run=run, gen=gen, predict=predict, w=ReportWriter(out_dir))
    c.put(generation=gen)
    # Sections fill the writer in display order; status and findings go in front at the end.
    _section_training(c)
    c.selection, _ = c.load("select", SelectionResult)  # its lo/hi go into the time plot
    _section_exploration(c)
    _section_selection(c)
    _section_labeling(c)
    _section_audit(c)
    _section_dataset(c)
    _section_convergence(c)
    body = c.w.blocks
    c.w.blocks = []
    c.w.text(f"Run `{run.root.name}`, generation {gen}. Tables link to CSV files next to this report; "
             "all numbers also in `numbers.csv`.")
    c.w.heading("Findings")
    c.w.bullets(c.findings or ["nothing to report yet: no step of this generation has finished"])
    _section_status(c)
    c.w.blocks += body
    c.w.heading("All numbers")
    c.w.table(pd.DataFrame({"key": list(c.numbers), "value": list(c.numbers.values())}), "numbers",
              shown=False)
    md, html_path = c.w.write(f"eip-al report — generation {gen}")
    return GenerationReport(
        generation=gen, report_md=run.rel(md), report_html=run.rel(html_path),
        figures=[run.rel(p) for p in c.w.figures], tables=[run.rel(p) for p in c.w.tables],
        numbers=c.numbers,
    )
