"""Exploration: energy and σ vs time per walker, density vs time of NPT walkers, collapses,
stable times."""

from __future__ import annotations

import pandas as pd

from eip_al.report import figures
from eip_al.report.context import KINDS, LOG_REQUIRED, Context
from eip_al.report.sections import frames
from eip_al.rundir import RunDir, load_valid
from eip_al.schemas import ExplorationResult, ExplorationSummary


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


def _walker_results(c: Context) -> list[ExplorationResult]:
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


def render(c: Context) -> None:
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
            "walker": res.walker, "kind": res.kind, "ensemble": res.ensemble, "temperature_K": res.temperature_K,
            "steps_run": res.steps_run, "steps_requested": res.steps_requested,
            "simulated_time_fs": res.simulated_time_fs, "collapsed": res.collapsed,
            "collapse_time_fs": res.collapse_time_fs, "collapse_reason": res.collapse_reason,
            "stable_time_fs": stable, "n_candidates": res.n_candidates,
            "energy_mean": float(df["energy"].mean()) if has else None,
            "energy_std": float(df["energy"].std(ddof=0)) if has else None,
            "sigma_config_mean": float(df["sigma"].mean()) if has else None,
            "sigma_config_max": float(df["sigma"].max()) if has else None,
            "sigma_atom_max": float(df["sigma_max"].max()) if has and "sigma_max" in df.columns else None,
            "bias_ratio_mean": float(bias.mean()) if bias is not None and bool((bias != 0).any()) else None,
            "density_mean": res.density_mean if res.ensemble == "npt" else None,
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
        lo, hi, _selected_times(c),
    )
    c.w.figure(fig, "energy_sigma", "Unbiased total potential energy (top) and σ_config (bottom) vs time; "
               "MD left, eIP-UDD right; ○ frames selected for labeling, red × a collapse; "
               "dashed/dotted: selection lo/hi.")
    _density(c, walkers, logs)
    c.w.text("Per walker (stable time = time before a collapse; σ statistics over the logged steps; "
             "energy mean/std (population std), steps and wall time in the CSV):")
    c.w.table(table, "walkers", columns=[
        "walker", "kind", "ensemble", "temperature_K", "simulated_time_fs", "collapsed", "collapse_time_fs",
        "collapse_reason", "stable_time_fs", "n_candidates", "sigma_config_mean", "sigma_config_max",
        "bias_ratio_mean", "bias_ratio_atom_median", "bias_ratio_atom_max", "density_mean"])
    screens = {tuple(sorted(r.min_pair_distance.items())) for r in walkers if r.min_pair_distance}
    if len(screens) == 1:
        c.w.text("Minimum pair distances (walker collapse rule and selection screen): "
                 + ", ".join(f"{k} {v:.3g} Å" for k, v in next(iter(screens))) + ".")
    frames.render(c)


def _density(c: Context, walkers: list[ExplorationResult], logs: dict[str, pd.DataFrame]) -> None:
    """Density vs time of the NPT walkers whose logs record it (none: nothing shown)."""
    npt = {r.walker: logs[r.walker] for r in walkers
           if r.ensemble == "npt" and r.walker in logs and "density" in logs[r.walker].columns}
    if not npt:
        return
    col = c.cfg.explore.collapse
    collapses = {r.walker: r.collapse_time_fs for r in walkers if r.walker in npt and r.collapsed}
    fig = figures.density_vs_time(npt, collapses, (col.density_min_g_cm3, col.density_max_g_cm3))
    c.w.figure(fig, "density", "Density vs time of the NPT walkers; red × a collapse; dashed: the "
               "collapse rule's density window (explore.collapse.density_min/max_g_cm3).")


def _selected_times(c: Context) -> dict[str, list[float]]:
    """walker → times (fs) of its frames that selection picked (decisions.csv), {} if none."""
    if c.selection is None:
        return {}
    try:
        d = pd.read_csv(c.run.abs(c.selection.decisions_csv), usecols=["walker", "time_fs", "decision"])
    except (OSError, ValueError):
        return {}
    picked = d[d["decision"] == "selected"]
    return {str(w): g["time_fs"].astype(float).tolist() for w, g in picked.groupby("walker")}
