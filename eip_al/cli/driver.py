"""Driving a whole run from `eip-al run`: engine choice, signals, one-line failures.

`--engine prefect` (default) runs flow `active-learning` with Prefect's ephemeral server;
`--engine none` runs the same resumable steps (`eip_al.pipeline.run_all`) without Prefect.
Either way a failure is ONE line naming what failed, where the details are and how to
continue (`RunFailed`); `--debug` shows the traceback instead (and Prefect's own).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from eip_al.cli.interrupt import ServerStartError, start_ephemeral_server, stop_on_signals
from eip_al.config import ALConfig
from eip_al.rundir import RunDir

Engine = Literal["prefect", "none"]


class RunFailed(RuntimeError):
    """A run stopped on an error; the message is the one line the user sees."""


class _NoTracebacks(logging.Filter):
    """Keep Prefect's failure log lines but drop their tracebacks (the CLI prints one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def _hide_prefect_tracebacks() -> None:
    """Filter every handler Prefect's logging config installed (records of all prefect.*
    loggers pass through them) and the run loggers themselves."""
    no_tb = _NoTracebacks()
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        logger = logging.getLogger(name)
        logger.addFilter(no_tb)
        for handler in logger.handlers:
            handler.addFilter(no_tb)


def failure_line(exc: BaseException, run: RunDir, rerun: str) -> str:
    """What failed and how to continue, in one line (details live in the run directory)."""
    from eip_al.pipeline import LabelingBudgetExceeded
    from eip_al.seed import SeedError

    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, LabelingBudgetExceeded | SeedError):
        return (f"{text}. Fix the labeler, or raise labeler.max_failure_fraction and run "
                f"`{rerun} --fork` (finished labels are kept)")
    where = _failed_step(run)
    return (f"{where + ': ' if where else ''}{type(exc).__name__}: {text}. Step records: "
            f"{run.root}/gen-*/generation.json; rerun `{rerun}` to continue, `--debug` shows the traceback")


def _failed_step(run: RunDir) -> str:
    """'generation 1, step select' for the last step recorded as failed, else ''."""
    from eip_al.pipeline import record_path
    from eip_al.rundir import load_valid
    from eip_al.schemas import GenerationRecord

    for gen in reversed(run.generations()):
        rec = load_valid(record_path(run, gen), GenerationRecord)
        failed = [s for s in rec.steps if s.status == "failed"] if rec else []
        if failed:
            return f"generation {gen}, step {failed[-1].step}"
    return ""


def drive(cfg: ALConfig, config: Path, run: RunDir, fork: bool, engine: Engine, debug: bool,
          rerun: str, say=print) -> tuple[int, str | None]:
    """Run every generation with `engine`; returns (generations done, stop reason).

    Raises `RunFailed` (one line) for any failure unless `debug`, which re-raises it.
    """
    flow_runs: list[str] = []
    with stop_on_signals(lambda: flow_runs):
        try:
            if engine == "none":
                return _run_plain(cfg, run, say)
            return _run_prefect(config, run, fork, debug, flow_runs)
        except ServerStartError as exc:
            raise RunFailed(str(exc)) from None
        except Exception as exc:
            if debug:
                raise
            raise RunFailed(failure_line(exc, run, rerun)) from None


def _run_plain(cfg: ALConfig, run: RunDir, say) -> tuple[int, str | None]:
    from eip_al.pipeline import run_all

    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s - %(message)s")
    return run_all(cfg, run, log=say)


def _run_prefect(config: Path, run: RunDir, fork: bool, debug: bool, flow_runs: list[str]) -> tuple[int, str | None]:
    # The ephemeral server must not try to phone home from an offline machine.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    start_ephemeral_server()
    if not debug:
        _hide_prefect_tracebacks()
    import flows.al as al

    al.FLOW_RUN_IDS = flow_runs  # the flow appends its run ids (so Ctrl-C can mark them)
    result = al.active_learning(config=str(config.resolve()), run_dir=str(run.root.resolve()), fork=fork)
    return int(result["generations_done"]), result["stop_reason"]
