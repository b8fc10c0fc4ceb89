"""The report's figures, each a pure function of arrays/tables returning a matplotlib Figure.

Figures are built without pyplot (no global state, Agg only), so reports can be made from
worker threads and nothing needs closing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

KIND_LABEL = {"md": "MD", "udd": "eIP-UDD"}
BAND_COLOR = {
    "accurate": "tab:green",
    "candidate": "tab:orange",
    "failed": "tab:red",
    "unphysical": "tab:gray",
}


def _log_ok(*arrays: np.ndarray) -> bool:
    """True when every value is positive, so a log axis shows all of them."""
    return all(a.size > 0 and bool(np.all(np.asarray(a) > 0)) for a in arrays)


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def energy_sigma_vs_time(
    logs: Mapping[str, pd.DataFrame],
    kinds: Mapping[str, str],
    collapses: Mapping[str, float | None],
    lo: float | None,
    hi: float | None,
    selected: Mapping[str, Sequence[float]] | None = None,
) -> Figure:
    """Total potential energy and σ_config vs time, one column per kind (MD | UDD).

    `logs[walker]` has columns time_fs, energy, sigma; `collapses[walker]` is the collapse
    time (marked with a red cross at the walker's last logged point) or None;
    `selected[walker]` the times (fs) of its frames that selection sent to the labeler
    (open circles on both traces).
    """
    kind_order = [k for k in ("md", "udd") if k in kinds.values()] or ["md"]
    t_max = max((float(df["time_fs"].max()) for df in logs.values() if len(df)), default=0.0)
    scale, unit = (1000.0, "ps") if t_max >= 1000.0 else (1.0, "fs")
    fig = Figure(figsize=(5.2 * len(kind_order), 6.4), layout="constrained")
    axes = fig.subplots(2, len(kind_order), squeeze=False, sharex="col", sharey="row")
    for col, kind in enumerate(kind_order):
        ax_e, ax_s = axes[0, col], axes[1, col]
        walkers = [w for w, k in kinds.items() if k == kind and w in logs]
        all_sigma: list[np.ndarray] = []
        for w in walkers:
            df = logs[w]
            if df.empty:
                continue
            t, e, s = df["time_fs"].to_numpy(), df["energy"].to_numpy(), df["sigma"].to_numpy()
            (line,) = ax_e.plot(t / scale, e, lw=1.0, label=w)
            ax_s.plot(t / scale, s, lw=1.0, color=line.get_color())
            all_sigma.append(s)
            picked = np.asarray((selected or {}).get(w, ()), dtype=float)
            if picked.size and t.size:
                for ax, y in ((ax_e, e), (ax_s, s)):
                    ax.plot(picked / scale, np.interp(picked, t, y), "o", mfc="none", ms=5, mew=1.0,
                            color=line.get_color())
            if collapses.get(w) is not None:
                ax_e.plot(t[-1] / scale, e[-1], "x", color="red", ms=9, mew=2)
                ax_s.plot(t[-1] / scale, s[-1], "x", color="red", ms=9, mew=2)
        n_coll = sum(1 for w in walkers if collapses.get(w) is not None)
        ax_e.set_title(f"{KIND_LABEL.get(kind, kind)}: {len(walkers)} walker{'s' if len(walkers) != 1 else ''}, "
                       f"{n_coll} collapsed (×)")
        ax_e.set_ylabel("potential energy, total (eV)")
        ax_s.set_ylabel("σ_config (eV/Å)")
        ax_s.set_xlabel(f"simulation time ({unit})")
        if all_sigma and _log_ok(np.concatenate(all_sigma)):
            ax_s.set_yscale("log")
        for level, name, style in ((lo, "lo", "--"), (hi, "hi", ":")):
            if level is not None:
                ax_s.axhline(level, color="k", ls=style, lw=0.8, label=f"{name} = {level:.3g}")
        if walkers:
            for ax in (ax_e, ax_s):
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=7, loc="best")
        else:
            _empty(ax_e, f"no {KIND_LABEL.get(kind, kind)} walkers")
    return fig


def density_vs_time(
    logs: Mapping[str, pd.DataFrame], collapses: Mapping[str, float | None],
    window: tuple[float | None, float | None] = (None, None),
) -> Figure:
    """Density (g/cm³) vs time of NPT walkers, one line each; red × a collapse; dashed: the
    collapse rule's density window (`window`, a None bound not drawn)."""
    t_max = max((float(df["time_fs"].max()) for df in logs.values() if len(df)), default=0.0)
    scale, unit = (1000.0, "ps") if t_max >= 1000.0 else (1.0, "fs")
    fig = Figure(figsize=(7.0, 3.6), layout="constrained")
    ax = fig.subplots()
    for w, df in logs.items():
        if df.empty:
            continue
        t, rho = df["time_fs"].to_numpy() / scale, df["density"].to_numpy()
        (line,) = ax.plot(t, rho, lw=1.0, label=w)
        if collapses.get(w) is not None:
            ax.plot(t[-1], rho[-1], "x", color="red", ms=9, mew=2)
    for level in window:
        if level is not None:
            ax.axhline(level, color="k", ls="--", lw=0.8)
    ax.set_xlabel(f"simulation time ({unit})")
    ax.set_ylabel("density (g/cm³)")
    ax.set_title(f"NPT walkers: {len(logs)}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    return fig


def sigma_histograms(
    edges: np.ndarray, pool_counts: np.ndarray, selected_counts: np.ndarray, lo: float, hi: float,
    log_x: bool, xlabel: str = "σ_config (eV/Å)",
) -> Figure:
    """Histogram of σ_config of the pooled frames vs the selected ones, with lo and hi."""
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.subplots()
    widths = np.diff(edges)
    ax.bar(edges[:-1], pool_counts, width=widths, align="edge", alpha=0.5, label="pool", color="tab:blue")
    ax.bar(edges[:-1], selected_counts, width=widths, align="edge", alpha=0.8, label="selected",
           color="tab:orange")
    ax.axvline(lo, color="k", ls="--", lw=1, label=f"lo = {lo:.3g}")
    ax.axvline(hi, color="k", ls=":", lw=1, label=f"hi = {hi:.3g}")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("frames")
    n_sel = int(selected_counts.sum())
    ax.set_title(f"{int(pool_counts.sum())} pooled frames, {n_sel} selected"
                 + ("  (NO FRAMES SELECTED)" if n_sel == 0 else ""))
    ax.legend(fontsize=8)
    return fig


def trust_fraction_bars(table: pd.DataFrame) -> Figure:
    """Stacked accurate/candidate/failed/unphysical fractions, one bar per walker + overall."""
    fig = Figure(figsize=(max(5.0, 0.9 * len(table) + 2.5), 4.0), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(table))
    bottom = np.zeros(len(table))
    for band, color in BAND_COLOR.items():
        vals = table[band].to_numpy(dtype=float)
        ax.bar(x, vals, bottom=bottom, color=color, label=band)
        bottom += vals
    ax.set_xticks(x, table["walker"].tolist(), rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of pooled frames")
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return fig


# column names as eip_al/train.py writes them to metrics.csv (validation metrics are unprefixed)
TRAINING_PANELS: tuple[tuple[str, str, bool], ...] = (
    ("train_loss", "training loss", False),
    ("valid_loss", "validation loss", False),
    ("force_mae", "valid force MAE (eV/Å)", True),
    ("force_rmse", "valid force RMSE (eV/Å)", True),
    ("energy_mae_per_atom", "valid energy MAE (eV/atom)", True),
    ("sigma_mean", "valid σ mean (eV/Å)", True),
    ("spearman_atom", "valid Spearman(σ_i, error_i)", False),
    ("roc_auc_atom", "valid ROC-AUC (atoms)", False),
    ("lr", "learning rate", True),
)


def training_curves(curves: pd.DataFrame, best_epoch: int | None) -> Figure:
    """One small panel per known metric column present in the per-epoch CSV."""
    panels = [p for p in TRAINING_PANELS if p[0] in curves.columns and curves[p[0]].notna().any()]
    ncol = 3
    nrow = max(1, -(-len(panels) // ncol))
    fig = Figure(figsize=(4.0 * ncol, 2.8 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, (col, label, log_y) in zip(axes.flat, panels, strict=False):
        y = curves[col].to_numpy(dtype=float)
        ax.plot(curves["epoch"].to_numpy(), y, lw=1.2)
        if log_y and _log_ok(y[np.isfinite(y)]):
            ax.set_yscale("log")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.5", ls="--", lw=0.8)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    return fig


def parity(
    e_ref: np.ndarray, e_pred: np.ndarray, f_ref: np.ndarray, f_pred: np.ndarray, title: str
) -> Figure:
    """Energy-per-atom and force-component parity plots."""
    fig = Figure(figsize=(10.0, 4.4), layout="constrained")
    ax_e, ax_f = fig.subplots(1, 2)
    ax_e.scatter(e_ref, e_pred, s=10, alpha=0.7)
    ax_e.set_xlabel("reference energy (eV/atom)")
    ax_e.set_ylabel("predicted energy (eV/atom)")
    if f_ref.size > 2000:
        ax_f.hexbin(f_ref, f_pred, gridsize=60, mincnt=1, bins="log", cmap="viridis")
    else:
        ax_f.scatter(f_ref, f_pred, s=4, alpha=0.5)
    ax_f.set_xlabel("reference force component (eV/Å)")
    ax_f.set_ylabel("predicted force component (eV/Å)")
    for ax, a, b in ((ax_e, e_ref, e_pred), (ax_f, f_ref, f_pred)):
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    fig.suptitle(title, fontsize=10)
    return fig


def error_vs_sigma(sigma: np.ndarray, error: np.ndarray, title: str) -> Figure:
    """Hexbin of per-atom force error ‖ΔF_i‖ vs σ_i, with the y = x line (calibration)."""
    fig = Figure(figsize=(5.6, 4.8), layout="constrained")
    ax = fig.subplots()
    keep = (sigma > 0) & (error > 0)
    x, y = sigma[keep], error[keep]
    if x.size == 0:
        _empty(ax, "no atoms with positive σ and error")
        return fig
    hb = ax.hexbin(x, y, xscale="log", yscale="log", gridsize=40, mincnt=1, bins="log", cmap="viridis")
    fig.colorbar(hb, ax=ax, label="atoms")
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="error = σ")
    ax.set_xlabel("σ_i (eV/Å)")
    ax.set_ylabel("‖F_pred,i − F_ref,i‖ (eV/Å)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def calibration_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], title: str) -> Figure:
    """Mean realized per-atom force error per equal-count bin vs the bin's mean prediction
    (raw σ_i or calibrated expected error), one line per curve, with the diagonal."""
    fig = Figure(figsize=(5.6, 4.8), layout="constrained")
    ax = fig.subplots()
    shown = {k: v for k, v in curves.items() if len(v[0])}
    if not shown:
        _empty(ax, "no calibration data")
        return fig
    values = np.concatenate([np.concatenate([x, y]) for x, y, _ in shown.values()])
    log = _log_ok(values)
    for label, (x, y, _) in shown.items():
        ax.plot(x, y, "o-", ms=3, lw=1, label=label)
    lo, hi = float(values.min()), float(values.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="error = prediction")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("predicted per-atom force error: σ_i or calibrated (eV/Å)")
    ax.set_ylabel("mean ‖F_pred,i − F_ref,i‖ in bin (eV/Å)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def aleatoric_vs_epistemic(split: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Per-atom aleatoric vs epistemic σ, one hexbin panel per kind (explored frames)."""
    kinds = list(split) or ["md"]
    fig = Figure(figsize=(5.0 * len(kinds), 4.4), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=True):
        epi, ale = split.get(kind, (np.empty(0), np.empty(0)))
        keep = (epi > 0) & (ale > 0)
        if not keep.any():
            _empty(ax, "no per-atom uncertainties")
            continue
        ax.hexbin(epi[keep], ale[keep], xscale="log", yscale="log", gridsize=35, mincnt=1, bins="log",
                  cmap="magma")
        ax.set_xlabel("epistemic σ_i (eV/Å)")
        ax.set_ylabel("aleatoric σ_i (eV/Å)")
        ax.set_title(f"{KIND_LABEL.get(kind, kind)}: {int(keep.sum())} atoms", fontsize=9)
    return fig


def order_parameter_maps(
    samples: Mapping[str, tuple[np.ndarray, np.ndarray]],
    entropy: Mapping[str, float | None],
    bins: int,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    labels: tuple[str, str],
) -> Figure:
    """2-D histograms of the order parameters on the entropy grid, one panel per walker."""
    names = list(samples)
    ncol = min(4, max(1, len(names)))
    nrow = max(1, -(-len(names) // ncol))
    fig = Figure(figsize=(3.6 * ncol, 3.3 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        x, y = samples[name]
        counts, _, _ = np.histogram2d(x, y, bins=bins, range=[x_range, y_range])
        ax.imshow(np.log1p(counts.T), origin="lower", aspect="auto", cmap="viridis",
                  extent=(*x_range, *y_range))
        s = entropy.get(name)
        ax.set_title(f"{name}: S = {s:.3f}" if s is not None else f"{name}: no samples", fontsize=9)
        ax.set_xlabel(labels[0], fontsize=8)
        ax.set_ylabel(labels[1], fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_axis_off()
    return fig


def summary_panels(
    gens: Sequence[int], series: Sequence[tuple[str, Mapping[str, Sequence[float | None]], bool]]
) -> Figure:
    """Run-level trends: one panel per (title, {label: values per generation}, log_y)."""
    ncol = 2
    nrow = max(1, -(-len(series) // ncol))
    fig = Figure(figsize=(6.0 * ncol, 3.4 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    x = np.asarray(gens)
    for ax, (title, lines, log_y) in zip(axes.flat, series, strict=False):
        plotted = False
        for label, values in lines.items():
            y = np.array([np.nan if v is None else float(v) for v in values])
            if np.isfinite(y).any():
                ax.plot(x, y, "o-", label=label, ms=4)
                plotted = True
        if not plotted:
            _empty(ax, "no data")
        else:
            finite = np.concatenate([
                np.array([np.nan if v is None else float(v) for v in vals]) for vals in lines.values()
            ])
            if log_y and _log_ok(finite[np.isfinite(finite)]):
                ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("generation")
        ax.set_xticks(x)
    for ax in list(axes.flat)[len(series):]:
        ax.set_axis_off()
    return fig


def pair_min_distances(groups: Mapping[str, Mapping[str, np.ndarray]], limits: Mapping[str, float]) -> Figure:
    """Per element pair, the distribution over frames of each frame's smallest distance of
    that pair, one histogram per frame group (dataset, pooled, selected, ...); the screen's
    limit as a red line."""
    pairs = sorted({p for g in groups.values() for p in g})
    fig = Figure(figsize=(4.2 * max(len(pairs), 1), 3.4), layout="constrained")
    axes = fig.subplots(1, max(len(pairs), 1), squeeze=False)[0]
    if not pairs:
        _empty(axes[0], "no frames")
        return fig
    for ax, pair in zip(axes, pairs, strict=True):
        values = [v for g in groups.values() if (v := np.asarray(g.get(pair, []))).size]
        lo, hi = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
        bins = np.linspace(lo - 0.02, hi + 0.02, 30)
        for name, g in groups.items():
            v = np.asarray(g.get(pair, []))
            if v.size:
                ax.hist(v, bins=bins, histtype="step", density=True, lw=1.2, label=f"{name} ({v.size})")
        if pair in limits:
            ax.axvline(limits[pair], color="red", lw=1.0, label=f"limit {limits[pair]:.3g} Å")
        ax.set_xlabel(f"smallest {pair} distance per frame (Å)")
        ax.set_ylabel("frames (density)")
        ax.legend(fontsize=7)
    return fig


def radial_distribution(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], pair: str) -> Figure:
    """g(r) of one element pair for each frame group (`curves[name] = (r, g)`)."""
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.subplots()
    for name, (r, g) in curves.items():
        ax.plot(r, g, lw=1.2, label=name)
    if not curves:
        _empty(ax, "no frames")
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel(f"g(r) {pair}")
    ax.legend(fontsize=7)
    return fig
