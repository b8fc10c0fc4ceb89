"""Run-level summary across generations, `report_run` (the CLI's entry) and Prefect data.

The summary is built from the `numbers` of each generation's report artifact, so every
value in it is the one shown in that generation's report; `report_run` first rebuilds
the per-generation reports so the summary is current.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from eip_al.atomic import atomic_write_text
from eip_al.audit import Predictor, predict_checkpoint
from eip_al.integrity import seal
from eip_al.report import figures
from eip_al.report.generation import report_generation
from eip_al.report.render import ReportWriter, format_value
from eip_al.rundir import RunDir, RunDirError, load_valid
from eip_al.schemas import STEPS, GenerationReport

# (numbers key, label) of the headline values: the summary table and the Prefect markdown.
HEADLINE: tuple[tuple[str, str], ...] = (
    ("dataset_in_frames", "training set (frames)"),
    ("dataset_out_frames", "dataset after merge (frames)"),
    ("valid_force_mae", "valid force MAE (eV/Å)"),
    ("test_force_mae", "fixed-test force MAE (eV/Å)"),
    ("pool_sigma_mean", "pool σ mean (eV/Å)"),
    ("frac_candidate", "candidate fraction"),
    ("n_selected", "selected"),
    ("n_label_failed", "label failures"),
    ("md_stable_time_fs_mean", "MD stable time (fs)"),
    ("udd_stable_time_fs_mean", "UDD stable time (fs)"),
    ("md_entropy_mean", "MD entropy"),
    ("udd_entropy_mean", "UDD entropy"),
    ("audit_spearman_atom", "audit Spearman"),
    ("audit_roc_auc_atom", "audit ROC-AUC"),
)


def _long(df: pd.DataFrame, prefix: str, name: str, value: str) -> pd.DataFrame:
    """Columns `<prefix><name>` of the wide table as rows (generation, name, value)."""
    cols = [c for c in df.columns if c.startswith(prefix)]
    if not cols:
        return pd.DataFrame(columns=["generation", name, value])
    out = df[["generation", *cols]].melt(id_vars="generation", var_name=name, value_name=value)
    out[name] = out[name].str.removeprefix(prefix)
    out = out.dropna(subset=[value])
    order = {s: i for i, s in enumerate(STEPS)}  # steps in pipeline order, anything else after
    rank = out[name].map(lambda k: order.get(k, len(order)))
    return (out.assign(_rank=rank).sort_values(["generation", "_rank", name])
            .drop(columns="_rank").reset_index(drop=True))


def run_summary(run: RunDir) -> pd.DataFrame:
    """One row per generation with every number of its report; writes summary.{md,html,csv}.

    Generations without a valid report artifact get a row with only `generation` and
    `report_html` empty, and the summary says so.
    """
    rows: list[dict[str, Any]] = []
    missing: list[int] = []
    for gen in run.generations():
        rep = load_valid(run.artifact_path(gen, "report"), GenerationReport)
        if rep is None:
            missing.append(gen)
            rows.append({"generation": gen, "report_html": None})
        else:
            rows.append({"generation": gen, "report_html": rep.report_html,
                         **{k: v for k, v in rep.numbers.items() if k != "generation"}})
    df = pd.DataFrame(rows, columns=None if rows else ["generation", "report_html"])
    atomic_write_text(run.root / "summary.csv", df.to_csv(index=False))

    w = ReportWriter(run.root / "summary", doc_dir=run.root)
    w.out_dir.mkdir(parents=True, exist_ok=True)
    w.text(f"Run `{run.root.name}`: {len(df)} generation(s). Every number per generation: "
           "`summary.csv`; each generation's report: `gen-XXX/report/report.html`.")
    if missing:
        w.note(f"generation(s) {', '.join(map(str, missing))} have no report yet "
               "(`eip-al report RUN_DIR` builds them).")
    if df.empty:
        w.note("the run has no generation yet.")
        w.write(f"eip-al run summary — {run.root.name}", stem="summary")
        return df
    gens = df["generation"].astype(int).tolist()
    headline = ["generation"] + [k for k, _ in HEADLINE if k in df.columns]
    w.heading("Overview")
    w.table(df[headline].rename(columns=dict(HEADLINE)), "overview")

    def col(key: str) -> list[float | None]:
        if key not in df.columns:
            return [None] * len(df)
        return [None if pd.isna(v) else float(v) for v in pd.to_numeric(df[key], errors="coerce")]

    walkers = _long(df, "stable_time_fs.", "walker", "stable_time_fs")
    entropy = _long(df, "entropy.", "walker", "entropy")
    per_walker = walkers.pivot(index="generation", columns="walker", values="stable_time_fs").reindex(gens)
    stable_lines = {str(wk): col_values.tolist() for wk, col_values in per_walker.items()}
    series: Sequence[tuple[str, Mapping[str, Sequence[float | None]], bool]] = [
        ("dataset size (frames)", {"trained on": col("dataset_in_frames"),
                                   "after merge": col("dataset_out_frames")}, False),
        ("force MAE (eV/Å)", {"validation split": col("valid_force_mae"),
                              "fixed test split": col("test_force_mae"),
                              "new labels (audit)": col("audit_force_mae")}, True),
        ("σ statistics (eV/Å)", {"pool mean": col("pool_sigma_mean"), "pool median": col("pool_sigma_median"),
                                 "pool p90": col("pool_sigma_p90"), "validation mean": col("valid_sigma_mean"),
                                 "validation median": col("valid_sigma_median")},
         True),
        ("trust fractions", {"accurate": col("frac_accurate"), "candidate": col("frac_candidate"),
                             "failed": col("frac_failed")}, False),
        ("stable time per walker (fs)", stable_lines, False),
        ("configurational entropy", {"MD": col("md_entropy_mean"), "UDD": col("udd_entropy_mean")}, False),
        ("selection audit", {"Spearman": col("audit_spearman_atom"), "ROC-AUC": col("audit_roc_auc_atom")},
         False),
        ("wall time per step (s)", {k.removeprefix("wall_s."): col(k) for k in df.columns
                                    if k.startswith("wall_s.")}, True),
    ]
    w.heading("Trends")
    w.figure(figures.summary_panels(gens, series), "trends",
             "Dataset growth, force MAE, σ, trust fractions, stable time, diversity, audit and wall "
             "time per generation.")
    w.heading("Walkers")
    w.text("Stable time (before a collapse) and configurational entropy per walker and generation.")
    w.table(walkers.merge(entropy, on=["generation", "walker"], how="outer"), "walkers")
    w.heading("Labeling failures by class")
    fails = _long(df, "label_failures.", "failure_class", "count")
    if fails.empty:
        w.text("No labeling failures.")
    w.table(fails, "label_failures")
    w.heading("Wall time per step")
    wall = _long(df, "wall_s.", "step", "wall_time_s")
    if wall.empty:
        w.text("No wall times recorded (no generation record).")
    w.table(wall, "wall_times")
    w.write(f"eip-al run summary — {run.root.name}", stem="summary")
    return df


def report_run(
    run: RunDir, gens: list[int] | None = None, *, predict: Predictor | None = predict_checkpoint
) -> list[GenerationReport]:
    """Rebuild the reports of `gens` (default: every generation), write their artifacts, then the summary."""
    if not run.config_path.exists():
        raise FileNotFoundError(f"{run.root}: not a run directory (no config.yaml)")
    cfg = run.load_config()
    available = run.generations()
    todo = available if gens is None else list(gens)
    unknown = sorted(set(todo) - set(available))
    if unknown:
        raise RunDirError(
            f"{run.root}: no generation {', '.join(map(str, unknown))} "
            f"(available: {', '.join(map(str, available)) or 'none'})"
        )
    reports = []
    for gen in todo:
        rep = report_generation(cfg, run, gen, predict=predict)
        rep = seal(rep, run.root)
        rep.write(run.artifact_path(gen, "report"))
        reports.append(rep)
    run_summary(run)
    return reports


# figures embedded (as thumbnails) in the Prefect markdown artifact, in this order
PREFECT_FIGURES: tuple[tuple[str, str], ...] = (
    ("energy_sigma.png", "energy and σ vs time (MD left, UDD right; × collapse)"),
    ("training_curves.png", "training curves (train and validation)"),
    ("error_vs_sigma.png", "force error vs σ"),
)
THUMBNAIL_SCALE = 0.5  # of the report's figure size: ~4× fewer bytes in the Prefect database


def _thumbnail_uri(png: Path) -> str:
    """A PNG as a base64 data URI, scaled down (the Prefect UI renders data URIs in markdown)."""
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(png) as im:
        im.thumbnail((round(im.width * THUMBNAIL_SCALE), round(im.height * THUMBNAIL_SCALE)))
        im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def prefect_summary(report: GenerationReport, root: Path) -> tuple[list[dict[str, Any]], str]:
    """Table rows (every number) and markdown (headline numbers, the key figures, the
    absolute report path) for the Prefect artifacts of one generation; `root` is the run dir."""
    rows = [{"metric": k, "value": v} for k, v in report.numbers.items()]
    lines = [f"### eip-al generation {report.generation}", "", "| quantity | value |", "| --- | --- |"]
    for key, label in HEADLINE:
        if key in report.numbers:
            lines.append(f"| {label} | {format_value(report.numbers[key])} |")
    missing = report.numbers.get("missing_steps")
    if missing:
        lines += ["", f"**Steps not done:** {missing}"]
    html = (root / report.report_html).resolve()
    lines += ["", f"Full report (self-contained HTML): [{html}]({html.as_uri()}) — "
              f"Markdown: `{(root / report.report_md).resolve()}`"]
    by_name = {Path(f).name: root / f for f in report.figures}
    for name, caption in PREFECT_FIGURES:
        png = by_name.get(name)
        if png is not None and png.is_file():
            lines += ["", f"**{caption}**", "", f"![{caption}]({_thumbnail_uri(png)})"]
    return rows, "\n".join(lines) + "\n"
