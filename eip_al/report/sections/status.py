"""Which steps ran, with wall times from the generation record."""

from __future__ import annotations

import pandas as pd

from eip_al.report.context import Context
from eip_al.rundir import load_valid
from eip_al.schemas import STEPS, GenerationRecord


def render(c: Context) -> None:
    """Which steps are there, with wall times from the generation record."""
    record = load_valid(c.run.gen_dir(c.gen) / "generation.json", GenerationRecord)
    wall = {r.step: r.wall_time_s for r in record.steps} if record else {}
    skipped = {r.step for r in record.steps if r.status == "skipped"} if record else set()
    rows = []
    for step in STEPS:
        path = c.run.artifact_path(c.gen, step)
        if step == "report":  # this step: its wall time is in the generation record once it ends
            rows.append({"step": step, "status": "this report", "wall_time_s": wall.get(step),
                         "artifact": c.run.rel(path)})
            continue
        state = ("invalid" if step in c.invalid else "done") if path.exists() else (
            "skipped" if step in skipped else "not run" if step == "audit" else "missing")  # optional
        rows.append({"step": step, "status": state, "wall_time_s": wall.get(step),
                     "artifact": c.run.rel(path)})
        c.put(**{f"wall_s.{step}": wall.get(step)})
    missing = [r["step"] for r in rows if r["status"] not in ("done", "skipped", "not run", "this report")]
    c.put(missing_steps=", ".join(missing) if missing else None)
    c.w.heading("Steps")
    if missing:
        c.w.note(f"steps not done (or unusable) in this generation: {', '.join(missing)}; "
                 "the sections below show what is available.")
    c.w.table(pd.DataFrame(rows), "steps")
