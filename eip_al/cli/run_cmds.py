"""`eip-al check | run | status | report | schema | serve`: driving and inspecting runs."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from eip_al.cli.app import app, print_error, user_errors
from eip_al.integrity import REDO_STEPS, IntegrityError, redo_command, run_problems
from eip_al.integrity import redo as invalidate
from eip_al.preflight import Preflight, preflight
from eip_al.rundir import RunDir, RunDirError, load_valid
from eip_al.schemas import STEPS, ValidationMetrics, json_schemas

out = Console()
RedoStep = StrEnum("RedoStep", {s: s for s in REDO_STEPS})  # type: ignore[misc]
EngineChoice = StrEnum("EngineChoice", {"prefect": "prefect", "none": "none"})  # type: ignore[misc]


@app.command()
@user_errors
def schema(
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Write one <Artifact>.json per schema here.")
    ] = None,
) -> None:
    """Print (or write) the JSON Schema of every step artifact."""
    schemas = json_schemas()
    if out_dir is None:
        print(json.dumps(schemas, indent=2))
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, sch in schemas.items():
        (out_dir / f"{name}.json").write_text(json.dumps(sch, indent=2) + "\n")
    out.print(f"wrote {len(schemas)} schemas to {out_dir}")


@app.command()
@user_errors
def status(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Per-generation table: steps done (Train Explore Select Label Merge Audit Report; ✗: a file the
    step wrote has changed since), dataset size after merge, validation force MAE and median σ
    (eV/Å; a few extrapolating atoms can make the mean meaningless), candidate fraction,
    selected, failed labels. Exits 1 when a payload file differs from its artifact's record."""
    from eip_al.schemas import DatasetManifest, LabelingResult, SelectionResult, TrainingResult

    run = RunDir(run_dir)
    if not run.config_path.exists():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
    table = Table(title=f"run {run.root}")
    steps_header = " ".join(s[0].upper() for s in STEPS)  # T E S L M A R
    for col in ("gen", steps_header, "frames", "F-MAE", "σ median", "cand.", "sel.", "fail"):
        table.add_column(col, no_wrap=True)
    problems = run_problems(run, f"eip-al run {run.config_path} --run-dir {run.root}")
    bad = {path for path, _ in problems}
    seed = load_valid(run.seed_dir / "artifact.json", DatasetManifest)
    seed_mark = " ✗" if run.seed_dir / "artifact.json" in bad else ""
    out.print(f"seed dataset: {seed.n_frames if seed else '—'} frames{seed_mark}")

    def mark(gen: int, step: str) -> str:
        path = run.artifact_path(gen, step)  # type: ignore[arg-type]
        return "✗" if path in bad else "✓" if load_valid_any(path) else "·"

    for gen in run.generations():
        done = " ".join(mark(gen, s) for s in STEPS)
        tr = load_valid(run.artifact_path(gen, "train"), TrainingResult)
        se = load_valid(run.artifact_path(gen, "select"), SelectionResult)
        la = load_valid(run.artifact_path(gen, "label"), LabelingResult)
        me = load_valid(run.artifact_path(gen, "merge"), DatasetManifest)
        table.add_row(
            str(gen),
            done,
            str(me.n_frames) if me else "—",
            f"{tr.valid.force_mae:.3f}" if tr else "—",
            _sigma_median(tr.valid) if tr else "—",
            f"{se.overall.candidate:.2f}" if se else "—",
            str(se.n_selected) if se else "—",
            str(la.n_failed) if la else "—",
        )
    out.print(table)
    for _, msg in problems:
        out.print(f"[bold red]changed:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)


def _sigma_median(valid: ValidationMetrics) -> str:
    """The validation median σ; artifacts written before it existed show the mean, marked."""
    return f"{valid.sigma_median:.3f}" if valid.sigma_median is not None else f"{valid.sigma_mean:.3f} (mean)"


def load_valid_any(path: Path) -> bool:
    """True if `path` holds a JSON artifact with the current schema version."""
    from eip_al.schemas import SCHEMA_VERSION

    try:
        return json.loads(path.read_text()).get("schema_version") == SCHEMA_VERSION
    except (OSError, ValueError):
        return False


def _preflight_or_exit(
    config: Path, run_dir: Path | None, fork: bool, code: int, show_plan: bool
) -> Preflight:
    """Run the pre-flight checks; print the plan (if asked) and every problem, one per line;
    exit with `code` if there is any problem."""
    pre = preflight(config, run_dir, fork)
    if show_plan and pre.plan:
        out.print("\n".join(pre.plan), highlight=False, markup=False)
    for problem in pre.problems:
        print_error(problem)
    if pre.problems:
        raise typer.Exit(code)
    return pre


@app.command()
@user_errors
def check(
    config: Annotated[Path, typer.Argument(help="Run config YAML.")],
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run directory (default: runs/<name>).")
    ] = None,
    fork: Annotated[bool, typer.Option("--fork", help="As for `eip-al run`.")] = False,
) -> None:
    """Pre-flight: print the plan and every problem found before any work starts; exit 1 if
    there is one (config, files, templates, executables on PATH, CP2K input, run dir)."""
    _preflight_or_exit(config, run_dir, fork, code=1, show_plan=True)
    out.print("[green]ok[/]: no problems found")


@app.command()
@user_errors
def run(
    config: Annotated[Path, typer.Argument(help="Run config YAML, e.g. configs/al-water-demo.yaml.")],
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run directory (default: runs/<name>).")
    ] = None,
    fork: Annotated[
        bool, typer.Option("--fork", help="Continue an existing run dir with a changed config.")
    ] = False,
    redo: Annotated[
        RedoStep | None,
        typer.Option("--redo", help="Invalidate this step of --gen and every step after it, then run."),
    ] = None,
    gen: Annotated[int | None, typer.Option("--gen", min=0, help="The generation of --redo.")] = None,
    engine: Annotated[
        EngineChoice, typer.Option("--engine", help="prefect: flow with an ephemeral server; none: same steps, no Prefect.")
    ] = EngineChoice.prefect,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of failures.")] = False,
) -> None:
    """Run (or resume) an active-learning run in-process (Prefect's ephemeral mode: no server).

    A failure prints one error line (what failed, where the details are, how to continue)
    and exits 1; Ctrl-C or SIGTERM stops within seconds, leaving no child process.

    The pre-flight checks of `eip-al check` run first: any problem stops it (exit 2) before
    anything is written. Then every finished step's files are checked against the sizes and
    sha256 its artifact recorded; a changed file stops the run with the `--redo` to use.
    """
    run_cmd = f"eip-al run {config}" + (f" --run-dir {run_dir}" if run_dir is not None else "")
    if redo is None and gen is not None:
        raise RunDirError("--gen N is only used with --redo STEP, e.g. " + redo_command("train", gen, run_cmd))
    if redo is not None and gen is None and redo.value != "seed":
        raise RunDirError(f"--redo {redo.value} needs --gen N, e.g. " + redo_command(redo.value, 0, run_cmd))
    pre = _preflight_or_exit(config, run_dir, fork, code=2, show_plan=False)
    rundir = RunDir(pre.run_dir)
    rundir.init(pre.cfg, fork=fork)  # refuses a changed config early, with the reason
    if redo is not None:
        dest, moved = invalidate(rundir, redo.value, gen or 0)
        out.print(f"--redo {redo.value}: {len(moved)} artifact file(s) moved into {dest}")
    problems = run_problems(rundir, run_cmd)
    if problems:
        more = f" ({len(problems) - 1} more: eip-al status {rundir.root})" if len(problems) > 1 else ""
        raise IntegrityError(problems[0][1] + more)
    from eip_al.cli.driver import RunFailed, drive

    try:
        done, stop = drive(pre.cfg, config, rundir, fork, engine.value, debug, run_cmd,
                           say=lambda m: out.print(m, highlight=False, markup=False))
    except RunFailed as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None
    out.print(f"[green]done[/]: {done} generation(s) in {rundir.root}"
              + (f"; stopped early: {stop}" if stop else ""))
    out.print(f"summary: {rundir.root / 'summary.html'}")


@app.command()
@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    gen: Annotated[list[int] | None, typer.Option("--gen", help="Only these generations.")] = None,
) -> None:
    """(Re)build the per-generation reports and the run summary of RUN_DIR."""
    from eip_al.report import report_run

    run = RunDir(run_dir)
    reports = report_run(run, gen)  # also writes the run summary
    for r in reports:
        out.print(f"generation {r.generation}: {run.abs(r.report_html)}")
    out.print(f"summary: {run.root / 'summary.html'}")


@app.command()
@user_errors
def serve(
    config: Annotated[
        Path, typer.Option("--config", help="Default config of the deployment.")
    ] = Path("configs/al-water.yaml"),
    name: Annotated[str, typer.Option("--name", help="Deployment name.")] = "al-water",
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Default run dir.")] = None,
    config_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--config-dir",
            help="Directory whose config files (or presets: file stems) runs may use; repeatable. "
            "Default: the directory of --config.",
        ),
    ] = None,
    runs_root: Annotated[
        Path, typer.Option("--runs-root", help="Every run directory of the deployment lies inside it.")
    ] = Path("runs"),
) -> None:
    """Serve deployment active-learning/<name> (needs PREFECT_API_URL to a running server).

    Runs take a config file under the config directories or a preset name, overrides of
    name, generations, selection.n_select and train.epochs only, and a run dir inside
    --runs-root; anything else fails the run before it starts (docs/cluster.md, trust model).
    """
    from flows.serve import serve as serve_flow

    serve_flow(
        str(config),
        name=name,
        run_dir=str(run_dir) if run_dir else None,
        config_dirs=[str(d) for d in config_dir] if config_dir else None,
        runs_root=str(runs_root),
    )
