"""Labeling: jobs, failures, force outliers of the new labels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from eip_al.report.context import Context
from eip_al.rundir import RunDirError
from eip_al.schemas import LabelingResult


def render(c: Context) -> None:
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
    if failed:
        _failures_by_walker(c, la)
    _label_forces(c, la)


def _failures_by_walker(c: Context, la: LabelingResult) -> None:
    """Failed jobs per walker, walker kind and failure class: which exploration produced the
    frames the labeler could not (or should not) label. Walker and kind come from the
    selected frames (the same columns failures.csv has)."""
    frames: list = []
    if c.selection is not None:
        frames = c.frames(c.selection.selected_extxyz, labels=False)[0]
    origin = {str(a.info.get("frame_id")): (str(a.info.get("walker", "—")), str(a.info.get("kind", "—")))
              for a in frames}
    rows = [(*origin.get(o.frame_id, ("—", "—")), o.failure_class or "unclassified")
            for o in la.outcomes if o.status == "failed"]
    table = (pd.DataFrame(rows, columns=["walker", "kind", "failure_class"])
             .groupby(["walker", "kind", "failure_class"]).size().rename("failed").reset_index())
    c.w.text("Failed labels by the walker (and kind) whose frame it was:")
    c.w.table(table, "label_failures_by_walker")


HIGH_FORCE_FACTOR = 3.0  # new labels above this × the dataset's 99th-percentile |F_i| are reported


def _label_forces(c: Context, la: LabelingResult) -> None:
    """Force sizes of the new labels vs the dataset they join: close contacts found by
    exploration (e.g. a strong UDD bias) show up as labels far above anything in the data,
    and such frames weigh heavily in the next training."""
    new, _ = c.frames(la.labeled_extxyz, labels=True)
    try:
        old, _ = c.frames(c.run.dataset_for(c.gen).dataset_extxyz, labels=True)
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
