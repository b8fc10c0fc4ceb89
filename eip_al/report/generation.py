"""The per-generation report: what each step of one generation did, as md/html/png/csv.

Every section reads one step's artifact and degrades to a visible note when that step
has not run (or its artifact or files are unusable), so a report builds from whatever
steps are done — e.g. a generation whose labeling failed still shows its exploration.
Every number shown is also in a CSV next to the report and in `GenerationReport.numbers`
(flat keys, the same ones the run summary and the Prefect artifacts use).
"""

from __future__ import annotations

import pandas as pd

from eip_al.audit import Predictor, predict_checkpoint
from eip_al.config import ALConfig
from eip_al.report.context import Context
from eip_al.report.render import ReportWriter
from eip_al.report.sections import (
    audit,
    convergence,
    dataset,
    exploration,
    geometry,
    labeling,
    selection,
    status,
    training,
)
from eip_al.rundir import RunDir, RunDirError
from eip_al.schemas import GenerationReport, SelectionResult


def report_generation(
    cfg: ALConfig, run: RunDir, gen: int, *, predict: Predictor | None = predict_checkpoint
) -> GenerationReport:
    """Write generation `gen`'s report (md, html, png, csv) into `run.step_dir(gen, 'report')`.

    Builds from whatever steps are done; `predict` gives the model's predictions for the
    selection audit and the fixed test split (None skips both). Returns the artifact; the
    caller writes it (e.g. with `run_step`).
    """
    if not run.gen_dir(gen).is_dir():
        raise RunDirError(f"{run.root}: generation {gen} has no directory ({run.gen_dir(gen).name})")
    out_dir = run.step_dir(gen, "report")
    out_dir.mkdir(parents=True, exist_ok=True)
    c = Context(cfg=cfg, run=run, gen=gen, predict=predict, w=ReportWriter(out_dir))
    c.put(generation=gen)
    # Sections fill the writer in display order; status and findings go in front at the end.
    training.render(c)
    c.selection, _ = c.load("select", SelectionResult)  # its lo/hi go into the time plot
    exploration.render(c)
    selection.render(c)
    labeling.render(c)
    geometry.render(c)
    audit.render(c)
    dataset.render(c)
    convergence.render(c)
    body = c.w.blocks
    c.w.blocks = []
    c.w.text(f"Run `{run.root.name}`, generation {gen}. Tables link to CSV files next to this report; "
             "all numbers also in `numbers.csv`.")
    c.w.heading("Findings")
    c.w.bullets(c.findings or ["nothing to report yet: no step of this generation has finished"])
    status.render(c)
    c.w.blocks += body
    c.w.heading("All numbers")
    c.w.table(pd.DataFrame({"key": list(c.numbers), "value": list(c.numbers.values())}), "numbers",
              shown=False)
    md, html_path = c.w.write(f"eip-al report — generation {gen}")
    return GenerationReport(
        generation=gen, report_md=run.rel(md), report_html=run.rel(html_path),
        figures=[run.rel(p) for p in c.w.figures], tables=[run.rel(p) for p in c.w.tables],
        numbers=c.numbers,
    )
