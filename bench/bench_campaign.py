"""Campaign benchmark: does the active-learning loop give a better potential than cheaper strategies?

Several strategies run the real loop (`eip_al.pipeline.run_all`, no Prefect), each in its own
run directory, from the same seed dataset (same config, deterministic seed MD; its sha256 is
checked), with the same label budget per generation (`selection.n_select`) and the same
training budget (epochs, early stopping, warm start):

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

Scales: `quick` (a test: seconds of MD, 2 generations), `reduced` (what fits a shared
2-core machine in ~45 min), `full` (≈ 2 h on a free 2-core machine). Work files under
bench/data/campaign/<scale>/ (resumable: finished pipeline steps, test sets and evaluations are
reused); results in bench/results/campaign[-<scale>].json.

Run: OMP_NUM_THREADS=1 PYTHONPATH=. python bench/bench_campaign.py [--scale quick|reduced|full] [--quick] [--strategies eip md random ensemble] [--work DIR] [--out FILE] [--figures DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from ase import Atoms
from bench_uq import MockSet, dft_frames, eip_predictor, evaluate, mock_relabel, mock_set
from summarize import git_commit, machine_info, now_iso

from eip_al.atomic import atomic_write_text, sha256_file
from eip_al.calculator import EIPCalculator
from eip_al.config import ALConfig, WalkerConfig, config_from_mapping
from eip_al.explore import run_trajectory
from eip_al.explore.walker import start_atoms
from eip_al.io import read_frames, write_frames
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


SCALES = {
    "quick": Scale("quick", 2, 8, 12, 4, 2, 40, 2, 3, 500.0, 1, 30),
    "reduced": Scale("reduced", 4, 16, 48, 16, 30, 400, 8, 111, 500.0, 2, 200),
    "full": Scale("full", 6, 16, 48, 16, 30, 1000, 16, 111, 500.0, 4, 2000),
}

ENSEMBLE_SIZE = 4  # members of strategy (d)
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
    "so all run every generation; σ selection may pick fewer than n_select frames when few are candidates "
    "(lo ≤ σ < hi), random selection always picks n_select: compare at equal `labels`.",
]
SCALE_NOTES = {
    "reduced": ["Reduced scale (shared 2-core machine, ~45 min budget); the full-scale run "
                "(`--scale full`, ≈ 2 h on a free 2-core machine) is pending."],
    "quick": ["Quick scale: a smoke test of the code path; its numbers mean nothing."],
}
LABELS = {"eip": "(a) eIP: MD+UDD, σ", "md": "(b) MD only, σ", "random": "(c) MD+UDD, random",
          "ensemble": f"(d) {ENSEMBLE_SIZE}-model ensemble: MD+UDD, σ"}


# ----------------------------------------------------------------------------- configs
def strategy_config(strategy: str, scale: Scale, run_dir: Path) -> ALConfig:
    """configs/al-water-demo.yaml at `scale`, with the strategy's walkers, selection method and
    uncertainty source.

    The stop rule is switched off (a candidate fraction below 0 never happens) and any
    share of failed labels is accepted (`labeler.max_failure_fraction: 1`), so every
    strategy runs all generations and failed labels are counted as wasted, not fatal."""
    data = yaml.safe_load(BASE_CONFIG.read_text())
    kinds, replicas, method, source = STRATEGIES[strategy]
    walker = data["explore"]["walkers"][0] | {"steps": scale.walker_steps}
    data.update(name=f"campaign-{scale.name}-{strategy}", generations=scale.generations, run_dir=str(run_dir))
    data["system"]["n_molecules"] = scale.n_molecules
    data["seed_data"]["n_frames"] = scale.seed_frames
    data["train"]["epochs"] = scale.epochs
    data["model"] |= {"uncertainty": source, "ensemble_size": ENSEMBLE_SIZE}
    data["explore"]["walkers"] = [walker | {"kind": k, "replicas": replicas} for k in kinds]
    data["labeler"]["max_failure_fraction"] = 1.0
    data["selection"] |= {"n_select": scale.n_select, "method": method, "converge_candidate_fraction": 0.0}
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
def stable_time(cfg: ALConfig, run: RunDir, gen: int, checkpoint: Path, start: Atoms, temperature_K: float,
                seed: int, steps: int, out_dir: Path) -> dict[str, Any]:
    """Model-driven NVT MD from `start` until the run's collapse rules fire or `steps` pass."""
    walker = WalkerConfig(kind="md", temperature_K=temperature_K, steps=steps, timestep_fs=0.5,
                          sample_every=steps, seed=seed)
    atoms = start_atoms(start, temperature_K, np.random.default_rng(seed))
    screen = screen_for_run(cfg.explore.collapse, run, gen, atoms.numbers)
    tag = f"{temperature_K:g}K-{seed}"
    out = run_trajectory(atoms, EIPCalculator(checkpoint, device="cpu"), walker, cfg.explore.collapse,
                         out_dir / f"{tag}.csv", out_dir / f"{tag}.extxyz",
                         thermostat_rng=np.random.default_rng(seed + 1), label=f"stability {tag}", screen=screen)
    t_fs = (out.collapse_step if out.collapsed else out.steps_run) * walker.timestep_fs
    return {"temperature_K": temperature_K, "seed": seed, "stable_fs": t_fs, "cap_fs": steps * walker.timestep_fs,
            "collapsed": out.collapsed, "reason": out.collapse_reason}


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
    starts = sets["id_300K"]
    stability = [stable_time(cfg, run, gen, checkpoint, starts[s % len(starts)], t, s, scale.stability_steps,
                             cache.parent / f"stability-gen-{gen:03d}")
                 for t in (300.0, scale.hot_K) for s in range(scale.stability_seeds)]
    out = {"generation": gen, "checkpoint_sha256": key, "n_labels": run.dataset_for(gen).n_frames,
           "train_epochs_run": training.epochs_run, "valid_force_mae": training.valid.force_mae,
           "test": errors, "stability": stability,
           "eval_wall_s": time.perf_counter() - w0, "eval_cpu_s": time.process_time() - c0}
    atomic_write_text(cache, json.dumps(out, indent=1) + "\n")
    return out | selection_numbers(run, gen) | generation_steps(run, gen)


def stable_summary(stability: Sequence[dict[str, Any]], temperature_K: float) -> dict[str, float]:
    """Mean, min and share of capped runs of the stable time at one temperature (fs)."""
    t = np.array([s["stable_fs"] for s in stability if s["temperature_K"] == temperature_K])
    full = np.array([not s["collapsed"] for s in stability if s["temperature_K"] == temperature_K])
    return {"mean_fs": float(t.mean()), "min_fs": float(t.min()), "full_length_fraction": float(full.mean())}


# ----------------------------------------------------------------------------- comparison
def comparison(strategies: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """(a) vs (c) at equal labels on every test set: force MAE ratio a/c per generation."""
    if "eip" not in strategies or "random" not in strategies:
        return {}
    out: dict[str, Any] = {}
    for name in TEST_SETS:
        rows = []
        for a, c in zip(strategies["eip"], strategies["random"], strict=False):
            fa, fc = a["test"][name]["force_mae"], c["test"][name]["force_mae"]
            rows.append({"generation": a["generation"], "n_labels": a["n_labels"], "n_labels_random": c["n_labels"],
                         "eip": fa, "random": fc, "ratio": fa / fc})
        out[name] = rows
    return out


def findings(strategies: dict[str, list[dict[str, Any]]], cmp: dict[str, Any]) -> list[str]:
    """Plain statements of what the numbers show (the issue's expectations, checked)."""
    lines = []
    for name in ("hot", "dft_geometries"):
        if name not in cmp:
            continue
        last = cmp[name][-1]
        later = [r for r in cmp[name] if r["generation"] > 0]
        wins = sum(r["ratio"] < 1 for r in later)
        verdict = ("(a) beats (c) in every generation" if wins == len(later) else
                   "(a) does NOT beat (c) consistently" if wins else "(a) does NOT beat (c)")
        lines.append(f"{name}: at the last generation ({last['n_labels']} labels) force MAE eIP {last['eip']:.4f} vs "
                     f"random {last['random']:.4f} eV/Å (ratio {last['ratio']:.3f}); eIP lower in {wins} of "
                     f"{len(later)} generations after gen 0: {verdict}.")
    for s, rows in strategies.items():
        n_sel = sum(r["n_selected"] for r in rows)
        n_bad = sum(r["n_label_failed"] or 0 for r in rows)
        first, last = rows[0]["stable"], rows[-1]["stable"]
        stab = "; ".join(f"{t} {first[t]['mean_fs'] / 1000:.3g} → {last[t]['mean_fs'] / 1000:.3g} ps" for t in first)
        lines.append(f"{LABELS[s]}: labels {rows[0]['n_labels']} → {rows[-1]['n_labels']}, selected per generation "
                     f"{', '.join(str(r['n_selected']) for r in rows)}; {n_bad} of {n_sel} selected frames wasted; stable MD time gen 0 → gen {rows[-1]['generation']}: {stab}.")
    if "eip" in strategies:
        for r in strategies["eip"]:
            walkers = ", ".join(
                f"{w['walker']} " + (f"collapsed at {w['collapse_time_fs']:g} fs ({(w['reason'] or '').split(' (')[0]})"
                                    if w["collapsed"] else "full length")
                for w in r["walkers"])
            lines.append(f"eIP gen {r['generation']} walkers: {walkers}.")
    return lines


# ----------------------------------------------------------------------------- figures
def fig4c(run: RunDir, path: Path) -> None:
    """Energy and σ vs time of the MD and UDD walker of each generation (collapse marked)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    gens = [g for g in run.generations() if load_valid(run.artifact_path(g, "explore"), ExplorationSummary)]
    summaries = {g: load_valid(run.artifact_path(g, "explore"), ExplorationSummary) for g in gens}
    kinds = ("md", "udd")
    fig, axes = plt.subplots(len(gens), 2, figsize=(9, 2.0 * len(gens) + 0.6), sharex=True, squeeze=False)
    for row, g in enumerate(gens):
        for col, kind in enumerate(kinds):
            ax = axes[row][col]
            walker = next((w for w in summaries[g].walkers if w.kind == kind), None)
            if walker is None:
                ax.set_visible(False)
                continue
            df = pd.read_csv(run.abs(walker.log_csv))
            t_ps = df["time_fs"] / 1000
            ax.plot(t_ps, df["energy"] - df["energy"].iloc[0], color="C0", lw=0.8)
            ax.set_ylabel("E − E(0) (eV)", color="C0", fontsize=8)
            ax2 = ax.twinx()
            ax2.plot(t_ps, df["sigma"], color="C3", lw=0.8)
            ax2.set_ylabel("σ (eV/Å)", color="C3", fontsize=8)
            if walker.collapsed:
                ax.axvline(walker.collapse_time_fs / 1000, color="k", ls="--", lw=1)
                ax.set_title(f"gen {g} {kind.upper()}: collapsed at {walker.collapse_time_fs / 1000:.3g} ps "
                             f"({(walker.collapse_reason or '').split(':')[0]})", fontsize=8)
            else:
                ax.set_title(f"gen {g} {kind.upper()}: full {walker.simulated_time_fs / 1000:.3g} ps", fontsize=8)
            ax.set_xlim(0, walker.steps_requested * (df["time_fs"].iloc[1] - df["time_fs"].iloc[0]) / 1000
                        if len(df) > 1 else None)
    for ax in axes[-1]:
        ax.set_xlabel("time (ps)")
    fig.suptitle("Strategy (a): walker energy (blue) and σ (red); dashed: collapse", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_learning(strategies: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Test force MAE vs labels, one panel per test set."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TEST_SETS), figsize=(3.2 * len(TEST_SETS), 3), squeeze=False)
    for ax, name in zip(axes[0], TEST_SETS, strict=True):
        for s, rows in strategies.items():
            ax.plot([r["n_labels"] for r in rows], [r["test"][name]["force_mae"] for r in rows], "o-", label=LABELS[s])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("labelled frames")
    axes[0][0].set_ylabel("force MAE (eV/Å)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_stability(strategies: dict[str, list[dict[str, Any]]], temperatures: Sequence[float], path: Path) -> None:
    """Mean (line) and per-seed (dots) stable MD time vs generation, one panel per temperature."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(temperatures), figsize=(4.2 * len(temperatures), 3), squeeze=False)
    for ax, temp in zip(axes[0], temperatures, strict=True):
        for k, (s, rows) in enumerate(strategies.items()):
            gens = [r["generation"] for r in rows]
            ax.plot(gens, [stable_summary(r["stability"], temp)["mean_fs"] / 1000 for r in rows], "-",
                    color=f"C{k}", label=LABELS[s])
            for r in rows:
                t = [x["stable_fs"] / 1000 for x in r["stability"] if x["temperature_K"] == temp]
                ax.plot([r["generation"] + 0.05 * (k - 1)] * len(t), t, "o", color=f"C{k}", ms=3)
        cap = rows[0]["stability"][0]["cap_fs"] / 1000
        ax.axhline(cap, color="grey", ls=":", lw=1)
        ax.set_title(f"NVT MD at {temp:g} K (cap {cap:g} ps)", fontsize=9)
        ax.set_xlabel("generation")
    axes[0][0].set_ylabel("stable time (ps)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="reduced")
    ap.add_argument("--quick", action="store_true", help="the same as --scale quick")
    ap.add_argument("--strategies", nargs="+", choices=list(STRATEGIES), default=list(STRATEGIES))
    ap.add_argument("--work", type=Path, default=None, help="work directory (default bench/data/campaign/<scale>)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default bench/results/campaign[-<scale>].json)")
    ap.add_argument("--figures", type=Path, default=None, help="figure directory (default docs/figures; quick: <work>)")
    ap.add_argument("--note", action="append", default=[], help="a line about this run for the results (repeatable)")
    args = ap.parse_args(argv)
    scale = SCALES["quick" if args.quick else args.scale]
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

    results: dict[str, list[dict[str, Any]]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for s in args.strategies:
        cfg = strategy_config(s, scale, work / "runs" / s)
        run = RunDir(cfg.resolved_run_dir())
        timing = run_strategy(cfg, work / "campaign.log")
        cpu = timing["cpu_s_per_generation"]
        seed = load_valid(run.seed_dir / "artifact.json", DatasetManifest)
        runs[s] = {"run_dir": str(run.root.relative_to(work)), "seed_sha256": seed.sha256,
                   "loop_wall_s": sum(c["wall_s"] for c in timing["calls"]),
                   "loop_cpu_s": sum(c["cpu_s"] for c in timing["calls"])}
        results[s] = [evaluate_generation(cfg, run, g, sets, scale, work / "eval" / s / f"gen-{g:03d}.json")
                      for g in range(scale.generations)]
        for r in results[s]:
            r["cpu_s"] = cpu.get(str(r["generation"]))
            r["stable"] = {f"{t:g}K": stable_summary(r["stability"], t) for t in (300.0, scale.hot_K)}
    seeds = {v["seed_sha256"] for v in runs.values()}
    cmp = comparison(results)
    result = {
        "benchmark": "campaign",
        "date": now_iso(), "started": started,
        "machine": machine_info(threads=1), "git": git_commit(),
        "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
        "total_loop_wall_s": sum(r["loop_wall_s"] for r in runs.values()),
        "total_eval_wall_s": sum(g["eval_wall_s"] for rows in results.values() for g in rows),
        "total_cpu_s": sum(r["loop_cpu_s"] for r in runs.values())
        + sum(g["eval_cpu_s"] for rows in results.values() for g in rows),
        "scale": asdict(scale), "strategies": {s: LABELS[s] for s in args.strategies},
        "notes": NOTES + SCALE_NOTES.get(scale.name, []) + args.note,
        "same_seed_dataset": len(seeds) == 1,
        "test_sets": {k: len(v) for k, v in sets.items()},
        "runs": runs, "generations": results, "eip_vs_random": cmp, "findings": findings(results, cmp),
    }
    if "eip" in results:
        fig4c(RunDir(work / runs["eip"]["run_dir"]), figures / "campaign-fig4c.png")
    fig_learning(results, figures / "campaign-learning.png")
    fig_stability(results, (300.0, scale.hot_K), figures / "campaign-stability.png")
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
