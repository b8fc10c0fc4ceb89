"""The Prefect layer: flow `active-learning`, one task per library step, no science here.

Do NOT add `from __future__ import annotations` to this module: Prefect resolves the
flow's parameter annotations at serve time and string annotations break served runs.

The on-disk artifacts are the source of truth for resume (every step skips itself when its
artifact is valid), so tasks use no Prefect result cache (`cache_policy=NONE`).
"""

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Union

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from prefect.logging.handlers import APILogHandler
from prefect.task_runners import ThreadPoolTaskRunner

from eip_al import pipeline
from eip_al.config import ALConfig, config_from_mapping, load_config
from eip_al.label.backends import backend_for
from eip_al.progress import LOGGER as PROGRESS
from eip_al.progress import Throttle
from eip_al.rundir import RunDir
from eip_al.serving import ServePolicy, resolve_served_run

DEFAULT_CONFIG = "configs/al-water.yaml"
FLOW_RUN_IDS: list = []  # ids of the flow runs of this process (eip-al run marks them on Ctrl-C)


def _remember_flow_run() -> None:
    from prefect.runtime import flow_run

    if flow_run.id:
        FLOW_RUN_IDS.append(str(flow_run.id))


class _RootRelay(logging.Handler):
    """Sends `eip_al.progress` lines (training, walkers, labeling, the generation's summary
    lines), from any thread of this process, to the ROOT flow run's logs: `prefect
    deployment run ... --watch` users and the UI see every generation's progress in one
    place instead of inside nested subflow and task runs. API only: the console already
    shows these lines once (printed by the step, or logged by the generation flow)."""

    def __init__(self, flow_run_id: str) -> None:
        super().__init__(logging.INFO)
        self.flow_run_id = flow_run_id
        self.api = APILogHandler()

    def emit(self, record: logging.LogRecord) -> None:
        record.flow_run_id = self.flow_run_id
        record.task_run_id = None
        self.api.handle(record)


@contextmanager
def _relay_progress_to_root():
    from prefect.runtime import flow_run

    handler = _RootRelay(str(flow_run.id))
    level, propagate = PROGRESS.level, PROGRESS.propagate
    PROGRESS.addHandler(handler)
    PROGRESS.setLevel(logging.INFO)
    PROGRESS.propagate = False  # the console shows these lines already
    try:
        yield
    finally:
        PROGRESS.removeHandler(handler)
        PROGRESS.setLevel(level)
        PROGRESS.propagate = propagate


def _tell(level: int, message: str, *args: Any) -> None:
    """A generation-level line: in this (generation) flow run's log and the root's."""
    get_run_logger().log(level, message, *args)
    PROGRESS.log(level, message, *args)


def _resolve(config: Union[str, dict[str, Any], ALConfig], run_dir: Optional[str]) -> tuple[ALConfig, RunDir]:
    if isinstance(config, ALConfig):
        cfg = config
    elif isinstance(config, dict):
        cfg = config_from_mapping(config, "<flow parameter 'config'>")
    else:
        cfg = load_config(Path(config))
    root = Path(run_dir) if run_dir else cfg.resolved_run_dir()
    return cfg, RunDir(root)


def _task_runner(cfg: ALConfig):
    """Threads by default; Dask when `flow.task_runner: dask` (needs the `dask` extra)."""
    if cfg.flow.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.flow.dask_address:
            return DaskTaskRunner(address=cfg.flow.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": cfg.flow.max_workers,
                "processes": True,
                "dashboard_address": "127.0.0.1:0",  # never expose the dashboard beyond this host
            }
        )
    return ThreadPoolTaskRunner(max_workers=cfg.flow.max_workers)


@task(name="seed", cache_policy=NONE)
def seed_task(cfg: ALConfig, run_dir: str):
    return pipeline.seed_step(cfg, RunDir(run_dir))


@task(name="train", cache_policy=NONE)
def train_task(cfg: ALConfig, run_dir: str, gen: int):
    return pipeline.train_step(cfg, RunDir(run_dir), gen)


@task(name="explore-walker", cache_policy=NONE, task_run_name="explore-{name}")
def walker_task(cfg: ALConfig, run_dir: str, gen: int, name: str):
    return pipeline.walker_step(cfg, RunDir(run_dir), gen, name)


@task(name="explore-batch", cache_policy=NONE)
def walkers_task(cfg: ALConfig, run_dir: str, gen: int, names: list):
    return pipeline.walkers_step(cfg, RunDir(run_dir), gen, names)


@task(name="explore-summary", cache_policy=NONE)
def explore_summary_task(cfg: ALConfig, run_dir: str, gen: int, results: list):
    return pipeline.explore_summary_step(cfg, RunDir(run_dir), gen, results)


@task(name="select", cache_policy=NONE)
def select_task(cfg: ALConfig, run_dir: str, gen: int):
    return pipeline.select_step(cfg, RunDir(run_dir), gen)


@task(name="label-prepare", cache_policy=NONE)
def label_prepare_task(cfg: ALConfig, run_dir: str, gen: int):
    return pipeline.label_prepare_step(cfg, RunDir(run_dir), gen)


@task(name="label-job", cache_policy=NONE, task_run_name="label-{job_id}")
def label_job_task(cfg: ALConfig, run_dir: str, gen: int, job_id: str):
    return pipeline.label_job_step(cfg, RunDir(run_dir), gen, job_id)


@task(name="label-all", cache_policy=NONE)
def label_all_task(cfg: ALConfig, run_dir: str, gen: int):
    return pipeline.label_run_all_step(cfg, RunDir(run_dir), gen)


@task(name="label-collect", cache_policy=NONE)
def label_collect_task(cfg: ALConfig, run_dir: str, gen: int):
    return pipeline.label_collect_step(cfg, RunDir(run_dir), gen)


@task(name="merge", cache_policy=NONE)
def merge_task(cfg: ALConfig, run_dir: str, gen: int):
    return pipeline.merge_step(cfg, RunDir(run_dir), gen)


@task(name="audit", cache_policy=NONE)
def audit_task(cfg: ALConfig, run_dir: str, gen: int):
    return pipeline.audit_step(cfg, RunDir(run_dir), gen)


@task(name="report", cache_policy=NONE)
def report_task(cfg: ALConfig, run_dir: str, gen: int):
    return pipeline.report_step(cfg, RunDir(run_dir), gen)


def _publish(cfg: ALConfig, run: RunDir, gen: int, report) -> None:
    """Prefect artifacts for the generation: a table of every number, and a markdown with the
    headline numbers, the key figures (embedded) and the absolute report path."""
    from eip_al.report import prefect_summary

    rows, markdown = prefect_summary(report, run.root)
    key = f"{cfg.name}-gen-{gen:03d}".lower().replace("_", "-").replace(".", "-")
    create_table_artifact(key=f"{key}-table", table=rows, description=f"{cfg.name} generation {gen}")
    create_markdown_artifact(key=f"{key}-summary", markdown=markdown, description=f"run dir {run.root}")


def run_one_generation(cfg: ALConfig, run_dir: str, gen: int) -> Optional[str]:
    """train → explore (walkers batched, or in parallel) → select → label (jobs in parallel) → merge → audit → report."""
    run = RunDir(run_dir)
    t0 = time.perf_counter()
    train_task(cfg, run_dir, gen)
    names = pipeline.walker_names(cfg)
    if pipeline.explore_batched(cfg):  # one task: the walkers share one model pass per step
        results = walkers_task(cfg, run_dir, gen, names)
    else:
        walkers = [walker_task.submit(cfg, run_dir, gen, n) for n in names]
        results = [w.result() for w in walkers]
    for r in results:
        if r.collapsed:
            _tell(logging.WARNING, "gen %d: walker %s collapsed at %.0f fs: %s", gen, r.walker,
                  r.collapse_time_fs or 0.0, r.collapse_reason)
    explore_summary_task(cfg, run_dir, gen, results)
    sel = select_task(cfg, run_dir, gen)
    _tell(logging.INFO, "gen %d: selected %d of %d candidates (accurate %.2f, candidate %.2f, failed %.2f)",
          gen, sel.n_selected, sel.n_candidate, sel.overall.accurate, sel.overall.candidate, sel.overall.failed)
    jobs = label_prepare_task(cfg, run_dir, gen)
    if backend_for(cfg.labeler.backend).runs_here:  # jobs run here: one task each, in parallel
        delay = cfg.flow.retry_delay_s
        job_task = label_job_task.with_options(
            retries=cfg.flow.label_retries,
            retry_delay_seconds=[delay * 2**i for i in range(cfg.flow.label_retries)] or 0,
        )
        futures = [job_task.submit(cfg, run_dir, gen, j.job_id) for j in jobs.jobs]
        throttle, n_failed = Throttle(), 0
        for done, fut in enumerate(as_completed(futures), start=1):
            n_failed += fut.result().status == "failed"  # a task that raised fails the generation
            if throttle.due() or done == len(futures):
                PROGRESS.info("[label] gen %d: %d/%d jobs done, %d failed", gen, done, len(futures), n_failed)
        if n_failed:
            _tell(logging.WARNING, "gen %d: %d of %d labeling jobs failed", gen, n_failed, len(futures))
    else:  # the backend runs the batch (slurm: one job array; export: the user runs the jobs)
        label_all_task(cfg, run_dir, gen)
    label_collect_task(cfg, run_dir, gen)
    merged = merge_task(cfg, run_dir, gen)
    audit_task(cfg, run_dir, gen)
    report = report_task(cfg, run_dir, gen)
    _publish(cfg, run, gen, report)
    _tell(logging.INFO, "gen %d done in %.0f s: dataset %d frames; report %s", gen,
          time.perf_counter() - t0, merged.n_frames, run.abs(report.report_html))
    return pipeline.stop_reason(cfg, run, gen)


@flow(name="generation", flow_run_name="gen-{gen}")
def generation_flow(cfg: ALConfig, run_dir: str, gen: int) -> Optional[str]:
    _remember_flow_run()
    return run_one_generation(cfg, run_dir, gen)


def _run_all(cfg: ALConfig, run: RunDir, fork: bool) -> dict[str, Any]:
    """Seed, then generations until done or converged; the run summary at the end."""
    with _relay_progress_to_root():
        return _run_generations(cfg, run, fork)


def _run_generations(cfg: ALConfig, run: RunDir, fork: bool) -> dict[str, Any]:
    logger = get_run_logger()
    _remember_flow_run()
    run.init(cfg, fork=fork)
    logger.info("run directory %s", run.root)
    seed = seed_task(cfg, str(run.root))
    logger.info("seed dataset: %d frames", seed.n_frames)
    stop = None
    done = 0
    for gen in range(cfg.generations):
        stop = generation_flow.with_options(task_runner=_task_runner(cfg))(cfg, str(run.root), gen)
        done = gen + 1
        if stop:
            logger.info("stopping after generation %d: %s", gen, stop)
            break
    from eip_al.report import run_summary

    run_summary(run)
    return {"run_dir": str(run.root), "generations_done": done, "stop_reason": stop}


@flow(name="active-learning", log_prints=True)
def active_learning(
    config: Union[str, dict[str, Any]] = DEFAULT_CONFIG,
    run_dir: Optional[str] = None,
    fork: bool = False,
) -> dict[str, Any]:
    """Run (or resume) an active-learning run in this process (`eip-al run`, Python).

    `config` is a YAML path or a mapping validated as ALConfig; `run_dir` defaults to
    runs/<name>. Rerunning on the same run directory skips every finished step. A served
    deployment runs `served_active_learning` instead, which takes no mapping.
    """
    cfg, run = _resolve(config, run_dir)
    return _run_all(cfg, run, fork)


@flow(name="active-learning", log_prints=True)
def served_active_learning(
    config: Union[str, dict[str, Any]] = DEFAULT_CONFIG,
    overrides: Optional[dict[str, Any]] = None,
    run_dir: Optional[str] = None,
    fork: bool = False,
) -> dict[str, Any]:
    """What deployment active-learning/<name> runs: parameters are data, never code.

    `config` is a config file under the served config directories or a preset name (a
    mapping is refused), `overrides` may set only `eip_al.serving.ALLOWED_OVERRIDES`, and
    the run directory must lie in the served runs root (eip_al/serving.py). A refused
    parameter fails the flow run with the reason before anything runs.
    """
    cfg, root = resolve_served_run(ServePolicy.from_env(), config, overrides, run_dir)
    return _run_all(cfg, RunDir(root), fork)
