"""Selection: trust bands, decisions, label-noise flags, the σ histogram."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eip_al.report import figures
from eip_al.report.context import Context, clean
from eip_al.schemas import SelectionResult


def _sigma_bins(sigma: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, bool]:
    """Histogram edges covering the pool and lo/hi: log-spaced when all σ are positive."""
    vals = sigma[np.isfinite(sigma)]
    a = min([lo, *vals.tolist()]) if vals.size else lo
    b = max([hi, *vals.tolist()]) if vals.size else hi
    if a > 0:
        return np.geomspace(a, b * (1 + 1e-9), 41), True
    return np.linspace(a, b * (1 + 1e-9) + 1e-12, 41), False


def render(c: Context) -> None:
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
    c.w.table(pd.DataFrame([{"quantity": k, "value": clean(v)} for k, v in stats.items()]),
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


def _label_noise_table(c: Context, sel: SelectionResult, dec: pd.DataFrame) -> None:
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
