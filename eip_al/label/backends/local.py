"""`labeler.backend: local`: jobs run on this machine, `labeler.n_parallel` at once.

Job scripts run in their own process group, with a timeout; a job still running from an
earlier (killed) eip-al process holds the job's `run.lock` and is waited for, not started
twice. A first Ctrl-C (`cancel_local`) interrupts every script this process runs; the
unfinished jobs stay unfinished and a rerun continues them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from eip_al.label.backends import Backend, BatchView, LabelOne, RetryOne, Runner, batch_name
from eip_al.label.backends.script import BUSY_EXIT, script_finished, write_status
from eip_al.label.parse import STATUS_NAME, read_status
from eip_al.progress import Throttle, bar, say

log = logging.getLogger(__name__)


class Cancelled(RuntimeError):
    """Local labeling was interrupted; unfinished jobs stay unfinished (rerun continues)."""


_RUNNING: dict[int, subprocess.Popen[bytes]] = {}
_RUNNING_LOCK = threading.Lock()
_CANCEL = threading.Event()


def cancel_local() -> None:
    """Interrupt every script this process runs (SIGINT to each process group)."""
    _CANCEL.set()
    with _RUNNING_LOCK:
        procs = list(_RUNNING.values())
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass


def reset_cancel() -> None:
    """Allow local runs again after `cancel_local` (called when a new labeling starts)."""
    _CANCEL.clear()


def _wait_unlocked(lock: Path) -> None:
    """Block until no other process (e.g. one an earlier, killed eip-al started) holds `lock`."""
    lock.touch()
    with open(lock, "rb") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if _CANCEL.is_set():
                    return
                time.sleep(1.0)
                continue
            fcntl.flock(fh, fcntl.LOCK_UN)
            return


def run_script_local(script: Path, timeout_s: float, grace_s: float = 30.0) -> None:
    """Run one job script here unless it already finished; never raises for a job failure.

    A copy still running from an earlier eip-al process (it holds `run.lock`) is waited
    for, not started twice. On timeout the process group gets SIGTERM (the script records
    signal=TERM and CP2K's partial output stays for the parser), then SIGKILL after
    `grace_s`.
    """
    d = script.parent
    while not script_finished(script):
        _wait_unlocked(d / "run.lock")
        if script_finished(script):
            return
        if _CANCEL.is_set():
            raise Cancelled(f"{d}: labeling was interrupted")
        returncode, killed, runtime = _run_once(script, timeout_s, grace_s)
        if returncode == BUSY_EXIT and read_status(d / STATUS_NAME) is None:
            continue  # another copy took the lock first: wait for it
        if killed or read_status(d / STATUS_NAME) is None:
            write_status(d, returncode, "KILL" if killed else "", runtime)
        return


def _run_once(script: Path, timeout_s: float, grace_s: float) -> tuple[int, bool, float]:
    d = script.parent
    start = time.perf_counter()
    killed = False
    with open(d / "run.log", "wb") as logf:
        proc = subprocess.Popen(
            ["bash", script.name],
            cwd=d,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with _RUNNING_LOCK:
        _RUNNING[proc.pid] = proc
    try:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s: no result after %.0f s (labeler.cp2k.timeout_s): terminating", d, timeout_s
            )
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                killed = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        with _RUNNING_LOCK:
            _RUNNING.pop(proc.pid, None)
    return proc.returncode, killed, time.perf_counter() - start


def run_scripts_local(scripts: list[Path], timeout_s: float) -> None:
    """Run job scripts one after another (parallelism comes from the caller's threads)."""
    for script in scripts:
        run_script_local(Path(script), timeout_s)


class LocalBackend(Backend):
    """Runs the labeler here: `labeler.execute` per job, in `n_parallel` threads."""

    name = "local"
    runs_here = True

    def runner(self, batch: BatchView) -> Runner:
        return batch.labeler.execute

    def run_all(self, batch: BatchView, todo: Sequence[Path], label: LabelOne, retry: RetryOne) -> None:
        """Each job (and its retry, which `label` runs right after) in a pool of threads."""
        reset_cancel()
        n = batch.cfg.n_parallel
        with bar(True) as progress, ThreadPoolExecutor(max_workers=n) as pool:
            task = progress.add_task(f"labeling ({batch.cfg.kind}, {n} at once)", total=len(todo))
            futures = [pool.submit(label, d, batch.labeler.execute) for d in todo]
            throttle, done, failed = Throttle(), 0, 0
            try:
                for fut in as_completed(futures):
                    try:
                        failed += fut.result().status == "failed"
                    except Cancelled:
                        pass
                    progress.advance(task)
                    done += 1
                    if throttle.due() or done == len(todo):
                        say("label", f"{batch_name(batch)}: {done}/{len(todo)} jobs done, {failed} failed")
            except KeyboardInterrupt:
                cancel_local()
                for fut in futures:
                    fut.cancel()
                raise
