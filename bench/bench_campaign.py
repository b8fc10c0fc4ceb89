"""Campaign benchmark: does the active-learning loop give a better potential than cheaper strategies?

Several strategies run the real loop (`eip_al.pipeline.run_all`, no Prefect), each in its own
run directory, from the same seed dataset (same config, deterministic seed MD; its sha256 is
checked), with the same label budget per generation (`selection.n_select`; σ selection takes
the n_select highest-σ frames below hi: `selection.lo` is set near zero so that it never picks
fewer) and the same training budget (epochs, early stopping, warm start). Each strategy runs
`replicates` times (replicate k: train, walker and selection seeds k; the seed dataset and
the test sets are the same for all), so a difference can be told from seed noise:

  a  eip     MD + eIP-UDD walkers, frames chosen by eIP σ (the default loop)
  b  md      MD only (two MD replicas: the same number of exploration steps), chosen by σ
  c  random  MD + UDD walkers, the same number of frames drawn at random
             (`selection.method: random`: σ is ignored; screen, dedup and step gap still apply)

  d  ensemble  MD + UDD walkers on a 4-model ensemble (`model.uncertainty: ensemble`,
             `model.ensemble_size: 4`): the same loop, σ = the members' force disagreement
             for selection, calibration, audit and UDD (docs/model.md); its real cost (4 members
             trained and evaluated per step) is in the timing columns like every other strategy's

Per strategy and generation g (model g is trained on the seed + g label batches):
* force MAE/RMSE and energy MAE per atom on fixed held-out sets labelled by the mock
  labeler, never used for training or selection: in-distribution 300 K, hot, compressed
  (`bench_uq.sample_mock_md`: independent Langevin trajectories, other box seeds), and the
  111 real-water DFT geometries (../shared/data/water-dft) relabelled by the mock;
* stable time of model-driven NVT MD at 300 K and at a hot temperature: the time until the
  run's own collapse rules fire (`explore.run_trajectory` with `CollapseDetector` and the
  run's learned pair screen), capped, from fixed held-out start frames, several seeds;
* wasted fraction: selected frames whose label failed or was quarantined as a force outlier
  (unphysical frames never reach labeling: the screen rejects them before selection);
* the audit (gen-XXX/audit/artifact.json): Spearman / ROC-AUC of the selecting model's σ
  against its error on the frames it chose;
* wall seconds of train / explore / select / label from generation.json, and process CPU
  seconds per generation (one torch thread).

Figures (docs/figures/): campaign-fig4c.png (the paper's Fig. 4c for strategy a: energy and σ vs
time for the MD and UDD walker of each generation, collapse marked), campaign-learning.png
(test force MAE vs labels), campaign-stability.png (stable MD time vs generation).

Scales: `quick` (a test: seconds of MD, 2 generations), `reduced` (2 replicates; about 1 h
of a free 2-core machine with two processes), `full` (3 replicates, longer walkers; several
hours of CPU, or a GPU machine). Work files under bench/data/campaign/<scale>/ (replicate 0 in
runs/<strategy>, replicate k in runs/<strategy>-r<k>; resumable: finished pipeline steps,
test sets and evaluations are reused); results in bench/results/campaign[-<scale>].json.

Run: OMP_NUM_THREADS=1 PYTHONPATH=. python bench/bench_campaign.py [--scale quick|reduced|full] [--quick] [--strategies eip md random ensemble] [--replicates 0 1 ...] [--work DIR] [--out FILE] [--figures DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from bench_uq import MockSet, dft_frames, eip_predictor, evaluate, mock_relabel, mock_set
from campaign_figures import fig4c, fig_learning, fig_stability
from summarize import git_commit, machine_info, now_iso

from eip_al.atomic import atomic_write_text, sha256_file
from eip_al.calculator import EIPCalculator
from eip_al.config import ALConfig, WalkerConfig, config_from_mapping
from eip_al.explore import run_trajectory
from eip_al.explore.walker import start_atoms
from eip_al.io import read_frames, write_frames
from eip_al.label.mock import MockWaterCalculator
from eip_al.pipeline import record_path, run_all
from eip_al.rundir import RunDir, load_valid
from eip_al.schemas import (
    DatasetManifest,
    ExplorationSummary,
    GenerationRecord,
    LabelingResult,
    SelectionAudit,
    SelectionResult,
    TrainingResult,
)
from eip_al.screening import screen_for_run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
FIGURES = ROOT / "docs" / "figures"
BASE_CONFIG = ROOT / "configs" / "al-water-demo.yaml"
TEST_SETS = ("id_300K", "hot", "compressed", "dft_geometries")


@dataclass(frozen=True)
class Scale:
    """Everything that sets the cost of a campaign (recorded in the results)."""

    name: str
    generations: int
    n_molecules: int
    seed_frames: int
    n_select: int
    epochs: int
    walker_steps: int
    test_frames_per_seed: int  # per trajectory; two trajectories per mock test set
    n_dft: int  # DFT geometries (111: all)
    hot_K: float
    stability_seeds: int
    stability_steps: int  # cap, 0.5 fs steps
    replicates: int  # independent runs of every strategy (seeds 0 … replicates−1)

    @property
    def temperatures(self) -> tuple[float, float]:
        """The stability MD temperatures (K): 300 K and the hot one."""
        return 300.0, self.hot_K


SCALES = {
    "quick": Scale("quick", 2, 8, 12, 4, 2, 40, 2, 3, 500.0, 1, 30, 1),
    "reduced": Scale("reduced", 4, 16, 48, 16, 30, 400, 8, 111, 500.0, 2, 2000, 2),
    "full": Scale("full", 6, 16, 48, 16, 30, 1000, 16, 111, 500.0, 4, 4000, 3),
}

ENSEMBLE_SIZE = 4  # members of strategy (d)
BUDGET_LO = 1e-4  # selection.lo of the σ strategies (eV/Å): far below any σ, so the budget is always filled
# strategy -> (walker kinds, replicas of each, selection method, model.uncertainty)
STRATEGIES: dict[str, tuple[tuple[str, ...], int, str, str]] = {
    "eip": (("md", "udd"), 1, "sigma", "evidential"),
    "md": (("md",), 2, "sigma", "evidential"),
    "random": (("md", "udd"), 1, "random", "evidential"),
    "ensemble": (("md", "udd"), 1, "sigma", "ensemble"),
}
NOTES = [
    f"Strategy (d) runs the same loop with model.uncertainty = ensemble ({ENSEMBLE_SIZE} head-less PaiNNs, "
    f"seeds seed … seed+{ENSEMBLE_SIZE - 1}, MSE loss through the one training loop): {ENSEMBLE_SIZE}× the "
    "training and model-evaluation cost of (a), recorded in its timing columns.",
    "Every strategy accepts any share of failed labels (labeler.max_failure_fraction 1) and never stops early, "
    "so all run every generation and failed labels count as wasted.",
    f"Budget match: σ selection runs with selection.lo = {BUDGET_LO:g} eV/Å (the demo's 0.1 would let a "
    "confident model pick fewer frames than n_select), so every strategy labels n_select frames per generation "
    "unless the pool runs short; the loop's own stop rule is off.",
    "Replicate k (k = 0 … replicates−1) seeds training, walkers and selection with k; the seed dataset and "
    "the test sets are shared by all runs. The detailed tables are replicate 0; the replicate summary gives "
    "mean and range over replicates, and the findings count wins over every (replicate, generation) pair.",
]
SCALE_NOTES = {
    "reduced": ["Reduced scale: 16 labels per generation, 4 generations, 2 replicates; the full scale "
                "(`--scale full`: 6 generations, 3 replicates, 1000-step walkers) was not run."],
    "quick": ["Quick scale: a smoke test of the code path; its numbers mean nothing."],
}
LABELS = {"eip": "(a) eIP: MD+UDD, σ", "md": "(b) MD only, σ", "random": "(c) MD+UDD, random",
          "ensemble": f"(d) {ENSEMBLE_SIZE}-model ensemble: MD+UDD, σ"}


# ----------------------------------------------------------------------------- configs
def run_name(strategy: str, replicate: int) -> str:
    """Run directory name under <work>/runs: the strategy, and -r<k> for replicate k ≥ 1."""
    return strategy if replicate == 0 else f"{strategy}-r{replicate}"


def strategy_config(strategy: str, scale: Scale, run_dir: Path, replicate: int = 0) -> ALConfig:
    """configs/al-water-demo.yaml at `scale`, with the strategy's walkers, selection method,
    uncertainty source and the replicate's seeds (train, walkers, selection; never the seed data).

    The stop rule is switched off (a candidate fraction below 0 never happens) and any
    share of failed labels is accepted (`labeler.max_failure_fraction: 1`), so every
    strategy runs all generations and failed labels are counted as wasted, not fatal."""
    data = yaml.safe_load(BASE_CONFIG.read_text())
    kinds, replicas, method, source = STRATEGIES[strategy]
    walker = data["explore"]["walkers"][0] | {"steps": scale.walker_steps, "seed": replicate}
    data.update(name=f"campaign-{scale.name}-{run_name(strategy, replicate)}", generations=scale.generations,
                run_dir=str(run_dir))
    data["system"]["n_molecules"] = scale.n_molecules
    data["seed_data"]["n_frames"] = scale.seed_frames
    data["train"] |= {"epochs": scale.epochs, "seed": replicate}
    data["model"] |= {"uncertainty": source, "ensemble_size": ENSEMBLE_SIZE}
    data["explore"]["walkers"] = [walker | {"kind": k, "replicas": replicas} for k in kinds]
    data["labeler"]["max_failure_fraction"] = 1.0
    data["selection"] |= {"n_select": scale.n_select, "method": method, "converge_candidate_fraction": 0.0,
                          "lo": BUDGET_LO, "seed": replicate}
    return config_from_mapping(data, f"{BASE_CONFIG} ({strategy}, {scale.name})")


def run_strategy(cfg: ALConfig, log_file: Path) -> dict[str, Any]:
    """Run (or resume) the loop. Returns its timing, kept in `<run>/bench_timing.json` across
    calls: process CPU seconds per generation (keyed 'gen', from the call that ran it; absent
    for a generation whose call was killed) and the wall and CPU seconds of every finished call."""
    run = RunDir(cfg.resolved_run_dir())
    run.init(cfg)
    timing_path = run.root / "bench_timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {"cpu_s_per_generation": {}, "calls": []}
    cpu: dict[str, float] = timing["cpu_s_per_generation"]
    w0, c0 = time.perf_counter(), time.process_time()
    t = [time.process_time()]

    def log(msg: str) -> None:
        with open(log_file, "a") as fh:
            fh.write(f"{now_iso()} {cfg.name}: {msg}\n")
        if msg.startswith("generation ") and " done in " in msg:  # "generation 2 done in 301 s"
            now = time.process_time()
            if float(msg.split()[4]) >= 1:  # < 1 s: this call only skipped the finished steps
                cpu.setdefault(msg.split()[1], now - t[0])
                atomic_write_text(timing_path, json.dumps(timing, indent=1) + "\n")  # kept if the call dies
            t[0] = now
        elif msg.startswith("seed dataset"):
            t[0] = time.process_time()

    run_all(cfg, run, log=log)
    timing["calls"].append({"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0})
    atomic_write_text(timing_path, json.dumps(timing, indent=1) + "\n")
    return timing


# ----------------------------------------------------------------------------- test sets
def test_sets(scale: Scale, data_dir: Path) -> dict[str, list[Atoms]]:
    """The fixed held-out sets (cached), all labelled by the mock force field."""
    n, f = scale.n_molecules, scale.test_frames_per_seed
    specs = {
        "id_300K": MockSet("ID: 300 K, 0.997 g/cm³", 300, 0.997, (201, 202), f, n),
        "hot": MockSet(f"hot: {scale.hot_K:g} K, 0.997 g/cm³", scale.hot_K, 0.997, (203, 204), f, n),
        "compressed": MockSet("compressed: 300 K, 1.15 g/cm³", 300, 1.15, (205, 206), f, n),
    }
    sets = {name: mock_set(name, data_dir, spec) for name, spec in specs.items()}
    path = data_dir / f"dft_geometries-mock-{scale.n_dft}.extxyz"
    if not path.exists():
        frames = dft_frames()
        idx = np.linspace(0, len(frames) - 1, min(scale.n_dft, len(frames))).round().astype(int)
        write_frames(path, mock_relabel([frames[i] for i in np.unique(idx)]))
    sets["dft_geometries"] = read_frames(path)
    return sets


# ----------------------------------------------------------------------------- evaluation
class ReferenceCalculator(MockWaterCalculator):
    """The labeler's own force field with σ = 0, so that `run_trajectory` can drive it: how long
    the reference itself stays inside the collapse rules (the ceiling of every model)."""

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, list(properties), list(system_changes))
        zeros = np.zeros((len(self.atoms), 3))
        self.results |= {"uncertainty": zeros[:, 0], "uncertainty_components": zeros, "aleatoric_components": zeros,
                         "config_uncertainty": 0.0}


def stable_time(cfg: ALConfig, run: RunDir, gen: int, calc: Calculator, start: Atoms, temperature_K: float,
                seed: int, steps: int, out_dir: Path) -> dict[str, Any]:
    """NVT MD driven by `calc` (a model, or the reference) from `start` until the run's collapse
    rules fire or `steps` pass."""
    walker = WalkerConfig(kind="md", temperature_K=temperature_K, steps=steps, timestep_fs=0.5,
                          sample_every=steps, seed=seed)
    atoms = start_atoms(start, temperature_K, np.random.default_rng(seed))
    screen = screen_for_run(cfg.explore.collapse, run, gen, atoms.numbers)
    tag = f"{temperature_K:g}K-{seed}"
    out = run_trajectory(atoms, calc, walker, cfg.explore.collapse,
                         out_dir / f"{tag}.csv", out_dir / f"{tag}.extxyz",
                         thermostat_rng=np.random.default_rng(seed + 1), label=f"stability {tag}", screen=screen)
    t_fs = (out.collapse_step if out.collapsed else out.steps_run) * walker.timestep_fs
    return {"temperature_K": temperature_K, "seed": seed, "stable_fs": t_fs, "cap_fs": steps * walker.timestep_fs,
            "collapsed": out.collapsed, "reason": out.collapse_reason}


def stability_runs(cfg: ALConfig, run: RunDir, gen: int, make_calc: Callable[[], Calculator],
                   sets: dict[str, list[Atoms]], scale: Scale, out_dir: Path) -> list[dict[str, Any]]:
    """Every stability run of one driver: each temperature × seed, from the held-out 300 K
    frames, with a fresh calculator from `make_calc` per run."""
    starts = sets["id_300K"]
    return [stable_time(cfg, run, gen, make_calc(), starts[s % len(starts)], t, s, scale.stability_steps, out_dir)
            for t in scale.temperatures for s in range(scale.stability_seeds)]


def generation_steps(run: RunDir, gen: int) -> dict[str, float | None]:
    """Wall seconds per step from generation.json."""
    rec = load_valid(record_path(run, gen), GenerationRecord)
    walls = {s.step: s.wall_time_s for s in rec.steps} if rec else {}
    return {f"{k}_wall_s": walls.get(k) for k in ("train", "explore", "select", "label", "merge", "report")}


def selection_numbers(run: RunDir, gen: int) -> dict[str, Any]:
    """Selection, labeling (wasted fraction), exploration and audit numbers of one generation."""
    sel = load_valid(run.artifact_path(gen, "select"), SelectionResult)
    lab = load_valid(run.artifact_path(gen, "label"), LabelingResult)
    exp = load_valid(run.artifact_path(gen, "explore"), ExplorationSummary)
    aud = load_valid(run.gen_dir(gen) / "audit" / "artifact.json", SelectionAudit)
    n_sel = sel.n_selected if sel else 0
    n_failed = lab.n_failed if lab else None
    return {
        "n_pool": sel.n_pool if sel else None, "n_selected": n_sel,
        "n_unphysical_pool": sel.n_unphysical if sel else None,
        "candidate_fraction": sel.overall.candidate if sel else None,
        "n_label_failed": n_failed, "label_failures": lab.failures_by_class if lab else None,
        "wasted_fraction": n_failed / n_sel if n_sel and n_failed is not None else None,
        "walkers": [{"walker": w.walker, "kind": w.kind, "steps_run": w.steps_run, "steps_requested": w.steps_requested,
                     "collapsed": w.collapsed, "collapse_time_fs": w.collapse_time_fs, "reason": w.collapse_reason,
                     "sigma_mean": w.sigma_mean} for w in (exp.walkers if exp else [])],
        "audit": None if aud is None else {
            k: getattr(aud, k) for k in ("n_frames", "spearman_atom", "roc_auc_atom", "spearman_config",
                                         "roc_auc_config", "force_error_config_mean", "sigma_config_mean")},
    }


def evaluate_generation(cfg: ALConfig, run: RunDir, gen: int, sets: dict[str, list[Atoms]], scale: Scale,
                        cache: Path) -> dict[str, Any]:
    """All per-generation numbers of one strategy (cached by checkpoint sha256)."""
    training = load_valid(run.artifact_path(gen, "train"), TrainingResult)
    checkpoint = run.abs(training.checkpoint)
    key = f"{sha256_file(checkpoint)}-stability-{scale.stability_seeds}x{scale.stability_steps}-{scale.hot_K:g}K"
    if cache.exists() and (found := json.loads(cache.read_text())).get("checkpoint_sha256") == key:
        return found | selection_numbers(run, gen) | generation_steps(run, gen)
    w0, c0 = time.perf_counter(), time.process_time()
    predict = eip_predictor(checkpoint, "cpu")
    errors = {}
    for name, frames in sets.items():
        m = evaluate(frames, predict(frames)[0], bootstrap=20)
        errors[name] = {k: m[k] for k in ("n_frames", "force_mae", "force_rmse", "energy_mae_per_atom",
                                          "sigma_mean", "spearman_atom", "roc_auc_atom")}
    stability = stability_runs(cfg, run, gen, lambda: EIPCalculator(checkpoint, device="cpu"), sets, scale,
                               cache.parent / f"stability-gen-{gen:03d}")
    out = {"generation": gen, "checkpoint_sha256": key, "n_labels": run.dataset_for(gen).n_frames,
           "train_epochs_run": training.epochs_run, "valid_force_mae": training.valid.force_mae,
           "test": errors, "stability": stability,
           "eval_wall_s": time.perf_counter() - w0, "eval_cpu_s": time.process_time() - c0}
    atomic_write_text(cache, json.dumps(out, indent=1) + "\n")
    return out | selection_numbers(run, gen) | generation_steps(run, gen)


def reference_stability(cfg: ALConfig, run: RunDir, sets: dict[str, list[Atoms]], scale: Scale,
                        cache: Path) -> list[dict[str, Any]]:
    """The stability runs of the evaluation (same starts, seeds, cap and generation-0 collapse
    rules) driven by the mock force field itself (cached)."""
    key = f"reference-{scale.stability_seeds}x{scale.stability_steps}-{scale.hot_K:g}K"
    if cache.exists() and (found := json.loads(cache.read_text())).get("key") == key:
        return found["stability"]
    stability = stability_runs(cfg, run, 0, ReferenceCalculator, sets, scale, cache.parent / "stability-reference")
    atomic_write_text(cache, json.dumps({"key": key, "stability": stability}, indent=1) + "\n")
    return stability


def stable_summary(stability: Sequence[dict[str, Any]], temperature_K: float) -> dict[str, float]:
    """Mean, min and share of capped runs of the stable time at one temperature (fs)."""
    t = np.array([s["stable_fs"] for s in stability if s["temperature_K"] == temperature_K])
    full = np.array([not s["collapsed"] for s in stability if s["temperature_K"] == temperature_K])
    return {"mean_fs": float(t.mean()), "min_fs": float(t.min()), "full_length_fraction": float(full.mean())}


# ----------------------------------------------------------------------------- comparison
Runs = dict[str, list[list[dict[str, Any]]]]  # strategy -> replicate -> generation rows


def comparison(runs: Runs, other: str) -> dict[str, Any]:
    """(a) vs `other` at equal labels on every test set: force MAE per replicate and generation,
    the ratio a/other of each pair and of the replicate means."""
    if "eip" not in runs or other not in runs:
        return {}
    out: dict[str, Any] = {}
    for name in TEST_SETS:
        rows = []
        for g in range(min(len(runs["eip"][0]), len(runs[other][0]))):
            pairs = [(a[g], c[g]) for a, c in zip(runs["eip"], runs[other], strict=False) if len(a) > g and len(c) > g]
            fa = [a["test"][name]["force_mae"] for a, _ in pairs]
            fc = [c["test"][name]["force_mae"] for _, c in pairs]
            rows.append({"generation": g, "n_labels": [a["n_labels"] for a, _ in pairs],
                         f"n_labels_{other}": [c["n_labels"] for _, c in pairs], "eip": fa, other: fc,
                         "ratio": [x / y for x, y in zip(fa, fc, strict=True)],
                         "ratio_of_means": float(np.mean(fa) / np.mean(fc))})
        out[name] = rows
    return out


def model_cost(rows: Sequence[dict[str, Any]]) -> float:
    """Wall seconds of train + explore + select summed over a run's generations (the model's cost)."""
    return float(sum((r["train_wall_s"] or 0) + (r["explore_wall_s"] or 0) + (r["select_wall_s"] or 0)
                     for r in rows))


def findings(runs: Runs, cmp: dict[str, dict[str, Any]], reference: dict[str, dict[str, float]]) -> list[str]:
    """Plain statements of what the numbers show (the issue's expectations, checked);
    `reference`: the reference force field's `stable_summary` per temperature key ("300K")."""
    lines = ["reference (the mock force field itself, same starts, seeds, cap and collapse rules): " + "; ".join(
        f"{t[:-1]} K {r['mean_fs'] / 1000:.3g} ps mean, {r['full_length_fraction']:.0%} of runs reach the cap"
        for t, r in reference.items()) + "."]
    for other, by_set in cmp.items():
        for name in ("hot", "dft_geometries"):
            if name not in by_set:
                continue
            last = by_set[name][-1]
            later = [x for r in by_set[name] if r["generation"] > 0 for x in r["ratio"]]
            wins = sum(x < 1 for x in later)
            verdict = (f"(a) beats {other} in every pair" if wins == len(later) else
                       f"(a) does NOT beat {other} consistently" if wins else f"(a) does NOT beat {other}")
            lines.append(
                f"{name}, eip vs {other}: last generation ({last['n_labels'][0]} labels) force MAE eIP "
                f"{np.mean(last['eip']):.4f} vs {other} {np.mean(last[other]):.4f} eV/Å (mean of "
                f"{len(last['eip'])} replicate(s), ratio {last['ratio_of_means']:.3f}); eIP lower in {wins} of "
                f"{len(later)} (replicate, generation ≥ 1) pairs: {verdict}.")
    if "eip" in runs and "ensemble" in runs:
        ca = np.mean([model_cost(rows) for rows in runs["eip"]])
        cd = np.mean([model_cost(rows) for rows in runs["ensemble"]])
        lines.append(f"model cost (train + explore + select wall s, all generations, replicate mean): eIP {ca:.0f} s, "
                     f"ensemble {cd:.0f} s (eIP at {ca / cd:.2f}× the ensemble's cost).")
    for s, reps in runs.items():
        rows = reps[0]
        n_sel = sum(r["n_selected"] for rr in reps for r in rr)
        n_bad = sum(r["n_label_failed"] or 0 for rr in reps for r in rr)
        stab = "; ".join(
            f"{t} " + " → ".join(f"{np.mean([rr[g]['stable'][t]['mean_fs'] for rr in reps]) / 1000:.3g}"
                                 for g in range(len(rows))) + " ps"
            for t in rows[0]["stable"])
        lines.append(f"{LABELS[s]}: labels {rows[0]['n_labels']} → {rows[-1]['n_labels']}, selected per generation "
                     f"{', '.join(str(r['n_selected']) for r in rows)} (replicate 0); {n_bad} of {n_sel} selected "
                     f"frames wasted over {len(reps)} replicate(s); stable MD time by generation (replicate mean): "
                     f"{stab}.")
    for k, rows in enumerate(runs.get("eip", [])):
        for r in rows:
            walkers = ", ".join(
                f"{w['walker']} " + (f"collapsed at {w['collapse_time_fs']:g} fs ({(w['reason'] or '').split(' (')[0]})"
                                    if w["collapsed"] else "full length")
                for w in r["walkers"])
            lines.append(f"eIP replicate {k} gen {r['generation']} walkers: {walkers}.")
    return lines


def replicate_summary(runs: Runs) -> dict[str, list[dict[str, Any]]]:
    """Per strategy and generation: mean, min and max over replicates of every test force MAE
    and of the stable MD time at each temperature."""
    out: dict[str, list[dict[str, Any]]] = {}
    for s, reps in runs.items():
        rows = []
        for g in range(min(len(rr) for rr in reps)):
            gs = [rr[g] for rr in reps]
            stat = {name: [r["test"][name]["force_mae"] for r in gs] for name in TEST_SETS}
            stat |= {f"stable_{t}": [r["stable"][t]["mean_fs"] for r in gs] for t in gs[0]["stable"]}
            rows.append({"generation": g, "n_labels": [r["n_labels"] for r in gs],
                         **{k: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
                            for k, v in stat.items()}})
        out[s] = rows
    return out


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="reduced")
    ap.add_argument("--quick", action="store_true", help="the same as --scale quick")
    ap.add_argument("--strategies", nargs="+", choices=list(STRATEGIES), default=list(STRATEGIES))
    ap.add_argument("--replicates", nargs="+", type=int, default=None,
                    help="which replicates to run (default: all of the scale's)")
    ap.add_argument("--work", type=Path, default=None, help="work directory (default bench/data/campaign/<scale>)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default bench/results/campaign[-<scale>].json)")
    ap.add_argument("--figures", type=Path, default=None, help="figure directory (default docs/figures; quick: <work>)")
    ap.add_argument("--note", action="append", default=[], help="a line about this run for the results (repeatable)")
    args = ap.parse_args(argv)
    scale = SCALES["quick" if args.quick else args.scale]
    replicates = sorted(set(args.replicates)) if args.replicates is not None else list(range(scale.replicates))
    if not replicates or not all(0 <= k < scale.replicates for k in replicates):
        ap.error(f"--replicates: each must lie in 0 … {scale.replicates - 1} (scale {scale.name})")
    work = (args.work or HERE / "data" / "campaign" / scale.name).resolve()
    out = args.out or RESULTS / ("campaign.json" if scale.name == "reduced" else f"campaign-{scale.name}.json")
    figures = args.figures or (work if scale.name == "quick" else FIGURES)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    work.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    started = now_iso()
    sets = test_sets(scale, work / "test-sets")

    results: Runs = {}
    runs: dict[str, dict[str, Any]] = {}
    for s in args.strategies:
        results[s] = []
        for k in replicates:
            name = run_name(s, k)
            cfg = strategy_config(s, scale, work / "runs" / name, k)
            run = RunDir(cfg.resolved_run_dir())
            timing = run_strategy(cfg, work / "campaign.log")
            cpu = timing["cpu_s_per_generation"]
            seed = load_valid(run.seed_dir / "artifact.json", DatasetManifest)
            runs[name] = {"strategy": s, "replicate": k, "run_dir": str(run.root.relative_to(work)),
                          "seed_sha256": seed.sha256, "loop_wall_s": sum(c["wall_s"] for c in timing["calls"]),
                          "loop_cpu_s": sum(c["cpu_s"] for c in timing["calls"])}
            rows = [evaluate_generation(cfg, run, g, sets, scale, work / "eval" / name / f"gen-{g:03d}.json")
                    for g in range(scale.generations)]
            for r in rows:
                r["replicate"] = k
                r["cpu_s"] = cpu.get(str(r["generation"]))
                r["stable"] = {f"{t:g}K": stable_summary(r["stability"], t) for t in scale.temperatures}
            results[s].append(rows)
    seeds = {v["seed_sha256"] for v in runs.values()}
    first = next(iter(runs.values()))
    ref_cfg = strategy_config(first["strategy"], scale, work / first["run_dir"], first["replicate"])
    reference = reference_stability(ref_cfg, RunDir(work / first["run_dir"]), sets, scale,
                                    work / "eval" / "reference.json")
    ref_summary = {f"{t:g}K": stable_summary(reference, t) for t in scale.temperatures}
    cmp = {other: c for other in ("random", "ensemble", "md") if (c := comparison(results, other))}
    summary = replicate_summary(results)
    result = {
        "benchmark": "campaign",
        "date": now_iso(), "started": started,
        "machine": machine_info(threads=1), "git": git_commit(),
        "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
        "total_loop_wall_s": sum(r["loop_wall_s"] for r in runs.values()),
        "total_eval_wall_s": sum(g["eval_wall_s"] for reps in results.values() for rows in reps for g in rows),
        "total_cpu_s": sum(r["loop_cpu_s"] for r in runs.values())
        + sum(g["eval_cpu_s"] for reps in results.values() for rows in reps for g in rows),
        "scale": asdict(scale), "replicates": replicates, "strategies": {s: LABELS[s] for s in args.strategies},
        "notes": NOTES + SCALE_NOTES.get(scale.name, []) + args.note,
        "same_seed_dataset": len(seeds) == 1,
        "test_sets": {k: len(v) for k, v in sets.items()},
        "runs": runs,
        "generations": {s: reps[0] for s, reps in results.items()},  # replicate replicates[0], in full
        "replicate_runs": {s: reps[1:] for s, reps in results.items()},  # the other replicates, in full
        "replicate_summary": summary,
        "reference_stability": {"runs": reference, **ref_summary},
        "eip_vs": cmp, "findings": findings(results, cmp, ref_summary),
    }
    if "eip" in results:
        fig4c(RunDir(work / "runs" / run_name("eip", replicates[0])), figures / "campaign-fig4c.png")
    fig_learning(summary, LABELS, TEST_SETS, figures / "campaign-learning.png")
    fig_stability(results, {t: ref_summary[f"{t:g}K"]["mean_fs"] for t in scale.temperatures}, LABELS,
                  figures / "campaign-stability.png")
    result["figures"] = [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)
                         for p in sorted(figures.glob("campaign-*.png"))]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {out} ({result['wall_s']:.0f} s wall)")
    for line in result["findings"]:
        print(line)
    return result


if __name__ == "__main__":
    main()
