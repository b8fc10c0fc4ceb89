"""Figures of bench/bench_campaign.py: the paper's Fig. 4c for one run, learning curves and
stable MD time per strategy (matplotlib, written as PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eip_al.rundir import RunDir, load_valid
from eip_al.schemas import ExplorationSummary


def fig4c(run: RunDir, path: Path) -> None:
    """Energy and σ vs time of the MD and UDD walker of each generation (collapse marked)."""
    import matplotlib.pyplot as plt

    summaries = {g: e for g in run.generations()
                 if (e := load_valid(run.artifact_path(g, "explore"), ExplorationSummary)) is not None}
    gens = list(summaries)
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


def fig_learning(summary: dict[str, list[dict[str, Any]]], labels: dict[str, str], test_sets: Sequence[str],
                 path: Path) -> None:
    """Test force MAE vs labels, one panel per test set: replicate mean (line) and range (band)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(test_sets), figsize=(3.2 * len(test_sets), 3), squeeze=False)
    for ax, name in zip(axes[0], test_sets, strict=True):
        for k, (s, rows) in enumerate(summary.items()):
            x = [np.mean(r["n_labels"]) for r in rows]
            ax.plot(x, [r[name]["mean"] for r in rows], "o-", color=f"C{k}", label=labels[s], ms=3)
            ax.fill_between(x, [r[name]["min"] for r in rows], [r[name]["max"] for r in rows], color=f"C{k}",
                            alpha=0.15, lw=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("labelled frames")
    axes[0][0].set_ylabel("force MAE (eV/Å)")
    axes[0][0].legend(fontsize=7)
    n_rep = len(next(iter(summary.values()))[0]["n_labels"])
    fig.suptitle(f"Held-out force MAE vs labels: mean of {n_rep} replicate(s), band = range", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_stability(runs: dict[str, list[list[dict[str, Any]]]], reference_fs: dict[float, float],
                  labels: dict[str, str], path: Path) -> None:
    """Mean (line) and per-run (dots, every replicate and seed) stable MD time vs generation,
    one panel per temperature of `reference_fs` (temperature K -> the reference force field's
    mean stable time, fs, under the same rules: dashed)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reference_fs), figsize=(4.2 * len(reference_fs), 3), squeeze=False)
    cap = next(iter(runs.values()))[0][0]["stability"][0]["cap_fs"] / 1000
    for ax, temp in zip(axes[0], reference_fs, strict=True):
        for k, (s, reps) in enumerate(runs.items()):
            gens = range(min(len(rr) for rr in reps))
            t = [[x["stable_fs"] / 1000 for rr in reps for x in rr[g]["stability"] if x["temperature_K"] == temp]
                 for g in gens]
            ax.plot(list(gens), [np.mean(v) for v in t], "-", color=f"C{k}", label=labels[s])
            for g, v in zip(gens, t, strict=True):
                ax.plot([g + 0.05 * (k - 1)] * len(v), v, "o", color=f"C{k}", ms=3)
        ax.axhline(cap, color="grey", ls=":", lw=1)
        ax.axhline(reference_fs[temp] / 1000, color="k", ls="--", lw=1, label="reference force field")
        ax.set_title(f"NVT MD at {temp:g} K (cap {cap:g} ps)", fontsize=9)
        ax.set_xlabel("generation")
    axes[0][0].set_ylabel("stable time (ps)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
