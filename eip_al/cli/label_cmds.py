"""`eip-al label | ingest`: labeling frames outside the loop."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from eip_al.cli.app import app, user_errors
from eip_al.config import ALConfig, config_from_mapping, load_config
from eip_al.registries import BACKENDS, LABELERS
from eip_al.schemas import LabelingResult

out = Console()


LabelerKind = StrEnum("LabelerKind", {kind: kind for kind in LABELERS})  # the registry's kinds


Backend = StrEnum("Backend", {name: name for name in BACKENDS})  # the registry's backends


def _summary(result: LabelingResult, title: str) -> None:
    table = Table(title=title)
    for col in ("jobs", "ok", "failed", "failures by class", "theory"):
        table.add_column(col)
    classes = ", ".join(f"{k}: {v}" for k, v in result.failures_by_class.items()) or "—"
    table.add_row(
        str(len(result.outcomes)),
        str(result.n_ok),
        str(result.n_failed),
        classes,
        f"{result.theory.method} ({result.theory.key()})",
    )
    out.print(table)


@app.command()
@user_errors
def label(
    in_file: Annotated[Path, typer.Argument(help="Frames to label (extxyz or any ASE format).")],
    out_file: Annotated[
        Path, typer.Argument(help="Labeled frames (extxyz): energy in eV, forces in eV/Å.")
    ],
    labeler: Annotated[LabelerKind | None, typer.Option(help="Overrides labeler.kind.")] = None,
    backend: Annotated[Backend | None, typer.Option(help="Overrides labeler.backend.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Run config (YAML); its `labeler` section is used.")
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="Job directories (default OUT.jobs/); rerunning resumes.")
    ] = None,
    n_parallel: Annotated[
        int | None, typer.Option(min=1, help="Overrides labeler.n_parallel.")
    ] = None,
) -> None:
    """Label frames with mock, CP2K, xTB or any ASE calculator; failed frames are left out and listed in OUT_STEM.failures.csv."""
    from eip_al.label import default_work_dir, label_file
    from eip_al.label.backends import backend_for

    cfg = load_config(config) if config is not None else ALConfig()
    lab = cfg.labeler
    updates = {
        k: v
        for k, v in (
            ("kind", labeler and labeler.value),
            ("backend", backend and backend.value),
            ("n_parallel", n_parallel),
        )
        if v is not None
    }
    source = f"{config or 'the default config'} with --labeler/--backend/--n-parallel"
    data = {**cfg.model_dump(mode="json"), "labeler": {**lab.model_dump(mode="json"), **updates}}
    lab = config_from_mapping(data, source).labeler  # a bad combination: one line naming the field
    work = work_dir or default_work_dir(out_file)
    result = label_file(in_file, out_file, lab, work)
    _summary(result, f"labels: {out_file}")
    report = out_file.resolve().with_name(out_file.resolve().stem + ".failures.csv")
    out.print(
        f"{result.n_ok} labeled frames in {out_file}; failure report {report}; jobs in {work}"
    )
    later = backend_for(lab.backend).runs_later  # export: unfinished jobs are the expected result
    if result.message:
        out.print(result.message, style="yellow" if later else "red")
    if result.budget_exceeded and not later:
        raise typer.Exit(1)


@app.command()
@user_errors
def ingest(
    path: Annotated[
        Path, typer.Argument(help="A run directory, or the work directory of `eip-al label`.")
    ],
    gen: Annotated[
        int | None, typer.Option(help="Generation (default: the latest with labeling jobs).")
    ] = None,
) -> None:
    """Collect exported labeling jobs that finished (idempotent: run it as often as you like)."""
    from eip_al.label import ingest_path

    result = ingest_path(path, gen)
    _summary(result, f"ingested: {path}")
    if result.message:
        out.print(result.message, style="yellow")
    elif (Path(path) / "config.yaml").exists():
        out.print(f"labels complete for generation {result.generation}; rerun the run to continue")
