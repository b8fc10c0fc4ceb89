"""Explored frames: configurational entropy and the aleatoric/epistemic split."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from eip_al.metrics import uq_metrics
from eip_al.report import figures
from eip_al.report.context import KINDS, Context, clean, mean_of
from eip_al.report.diversity import config_entropy, in_ranges, water_order_parameters
from eip_al.systems import is_water


def render(c: Context) -> None:
    """Diversity (configurational entropy) and the aleatoric/epistemic split of explored frames."""
    rep = c.cfg.report
    entropy_rows = []
    op_samples: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    entropies: dict[str, float | None] = {}
    split: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    non_water = False
    for res in c.walkers:
        frames, problem = c.frames(res.frames_extxyz, labels=False)
        if problem:
            c.w.note(f"walker `{res.walker}`: frames unusable: {problem}")
        for atoms in frames:
            if "uncertainty" in atoms.arrays and "aleatoric_components" in atoms.arrays:
                epi, ale = split.setdefault(res.kind, ([], []))
                epi.append(np.asarray(atoms.arrays["uncertainty"], dtype=float))
                ale.append(np.linalg.norm(np.asarray(atoms.arrays["aleatoric_components"], float), axis=1))
        row: dict[str, Any] = {"walker": res.walker, "kind": res.kind, "n_frames": len(frames)}
        if frames and not all(is_water(a.numbers) for a in frames):
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
                c.put(**{f"{kind}_entropy_mean": mean_of([clean(x) for x in sub["entropy"]])})
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
