"""Geometry of the frames at each stage: close contacts and the O–O g(r).

The known failure mode of exploration is frames that walk into close contacts (UDD pushes
molecules together); they show here as a shift of the smallest pair distances, and of the
first g(r) peak, of the pooled / selected / failed frames relative to the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import vesin
from ase import Atoms

from eip_al.report import figures
from eip_al.report.context import Context
from eip_al.rundir import RunDirError
from eip_al.screening import pair_name, screen_for_run, smallest_pair_distances

RDF_PAIR = (8, 8)  # O–O
RDF_MAX_A = 6.0
RDF_BINS = 120


def frame_min_distances(frames: Sequence[Atoms]) -> dict[str, np.ndarray]:
    """Element pair → the smallest distance of that pair in each frame (Å)."""
    out: dict[str, list[float]] = {}
    for atoms in frames:
        for pair, d in smallest_pair_distances([atoms]).items():
            out.setdefault(pair, []).append(d)
    return {k: np.asarray(v) for k, v in out.items()}


def radial_distribution(frames: Sequence[Atoms], pair: tuple[int, int] = RDF_PAIR,
                        r_max: float = RDF_MAX_A, bins: int = RDF_BINS) -> tuple[np.ndarray, np.ndarray] | None:
    """g(r) of element pair `pair` averaged over periodic `frames` (None without any)."""
    edges = np.linspace(0.0, r_max, bins + 1)
    hist, norm = np.zeros(bins), 0.0
    nl = vesin.NeighborList(cutoff=r_max, full_list=False)
    for atoms in frames:
        if not all(atoms.pbc) or atoms.cell.volume <= 0:
            continue
        z = np.asarray(atoms.numbers)
        n_a, n_b = int((z == pair[0]).sum()), int((z == pair[1]).sum())
        if not n_a or not n_b:
            continue
        i, j, d = nl.compute(np.asarray(atoms.positions, float), np.asarray(atoms.cell.array, float), True, "ijd")
        keep = ((z[i] == pair[0]) & (z[j] == pair[1])) | ((z[i] == pair[1]) & (z[j] == pair[0]))
        hist += np.histogram(d[keep], bins=edges)[0]
        # pairs expected in each shell for an ideal gas of the same density (half list: a≠b counted once)
        n_pairs = n_a * (n_a - 1) / 2 if pair[0] == pair[1] else n_a * n_b
        norm += n_pairs / atoms.cell.volume
    if norm == 0:
        return None
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return 0.5 * (edges[1:] + edges[:-1]), hist / (norm * shell)


def _groups(c: Context) -> dict[str, list[Atoms]]:
    """dataset (what this generation trained on), pooled (every walker frame), selected,
    unphysical (pooled frames selection refused), failed (selected frames whose label failed)."""
    groups: dict[str, list[Atoms]] = {}
    try:
        groups["dataset"] = c.frames(c.run.dataset_for(c.gen).dataset_extxyz, labels=True)[0]
    except RunDirError:
        pass
    groups["pooled"] = [a for r in c.walkers for a in c.frames(r.frames_extxyz, labels=False)[0]]
    if c.selection is not None:
        selected = c.frames(c.selection.selected_extxyz, labels=False)[0]
        groups["selected"] = selected
        try:
            d = pd.read_csv(c.run.abs(c.selection.decisions_csv), usecols=["frame_id", "reason"])
            bad = set(d.loc[d["reason"] == "unphysical", "frame_id"].astype(str))
        except (OSError, ValueError):
            bad = set()
        groups["unphysical"] = [a for a in groups["pooled"] if str(a.info.get("frame_id")) in bad]
        if c.labeling is not None:
            failed = {o.frame_id for o in c.labeling.outcomes if o.status == "failed"}
            groups["failed labels"] = [a for a in selected if str(a.info.get("frame_id")) in failed]
    return {k: v for k, v in groups.items() if v}


def render(c: Context) -> None:
    c.w.heading("Geometry: close contacts and g(r)")
    groups = _groups(c)
    if not set(groups) - {"dataset"}:
        c.w.note("no frames of this generation to compare with the dataset yet (no walker or selection files).")
        return
    mins = {name: frame_min_distances(frames) for name, frames in groups.items()}
    numbers = sorted({int(z) for frames in groups.values() for a in frames[:1] for z in a.numbers})
    limits = screen_for_run(c.cfg.explore.collapse, c.run, c.gen, numbers).thresholds
    rows = []
    for name, by_pair in mins.items():
        row: dict[str, object] = {"frames": name, "n_frames": len(groups[name])}
        for pair in sorted(by_pair):
            row[f"{pair} min (Å)"] = float(by_pair[pair].min())
            row[f"{pair} median of frame minima (Å)"] = float(np.median(by_pair[pair]))
            c.put(**{f"min_distance.{name.replace(' ', '_')}.{pair}": float(by_pair[pair].min())})
        rows.append(row)
    c.w.text("Smallest distance of each element pair in each frame, per group of frames: the dataset "
             "this generation trained on, every frame the walkers pooled, the frames selected, those "
             "selection refused as unphysical and the selected frames whose label failed. Limits of the "
             "pair-distance screen (walkers and selection): "
             + ", ".join(f"{k} {v:.3g} Å" for k, v in sorted(limits.items())) + ".")
    c.w.table(pd.DataFrame(rows), "geometry")
    c.w.figure(figures.pair_min_distances(mins, limits), "pair_min_distances",
               "Per frame, the smallest distance of each element pair (histograms per frame group; red: "
               "the screen's limit).")
    curves = {name: rdf for name, frames in groups.items() if (rdf := radial_distribution(frames)) is not None}
    if curves:
        pair = pair_name(*RDF_PAIR)
        c.w.figure(figures.radial_distribution(curves, pair), "rdf",
                   f"{pair} radial distribution function per frame group (periodic frames; ideal gas = 1).")
