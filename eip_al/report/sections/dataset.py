"""The dataset before and after the merge."""

from __future__ import annotations

import pandas as pd

from eip_al.report.context import Context
from eip_al.rundir import RunDirError
from eip_al.schemas import DatasetManifest


def render(c: Context) -> None:
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
