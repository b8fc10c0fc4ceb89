"""Stopping `eip-al run` cleanly: Ctrl-C or SIGTERM ends it within seconds, with no child left.

On the first SIGINT/SIGTERM the handler stops local labeling jobs (their own process
groups: CP2K, MPI), marks the Prefect flow runs of this process Cancelled (while the
ephemeral server still answers), terminates every remaining descendant process (psutil,
SIGTERM then SIGKILL) and exits 130 (SIGINT) or 143 (SIGTERM). Walker threads are not
waited for: every artifact is written atomically and every long step has resume points,
so an exit at any moment loses no finished work (the same guarantee as kill -9).

The ephemeral Prefect server is started here, in its own session, so a terminal's Ctrl-C
(sent to the whole foreground process group) does not kill it before the run is marked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from unittest import mock

import psutil

STARTUP_TIMEOUT_S = 180  # a loaded 2-core machine can need a minute to import and migrate


class ServerStartError(RuntimeError):
    """The ephemeral Prefect server did not come up."""


def start_ephemeral_server(timeout_s: int = STARTUP_TIMEOUT_S) -> None:
    """Start Prefect's ephemeral API server now, in a new session, with a generous timeout.

    Prefect starts the same singleton lazily on the first API call; starting it here first
    lets us give it its own session (Prefect's Popen has none) and a clear error. Does
    nothing when PREFECT_API_URL points at a server.
    """
    from prefect.server.api import server as prefect_server
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    popen = subprocess.Popen

    def own_session(*args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("start_new_session", True)
        return popen(*args, **kwargs)

    try:
        with mock.patch.object(prefect_server.subprocess, "Popen", own_session):
            prefect_server.SubprocessASGIServer().start(timeout=timeout_s)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ServerStartError(
            f"the ephemeral Prefect server did not start within {timeout_s} s ({first}); on a busy "
            "machine retry, or run without Prefect: eip-al run CONFIG --engine none"
        ) from None


def descendants() -> list[psutil.Process]:
    """Every live descendant process of this one."""
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def kill_descendants(grace_s: float = 5.0) -> None:
    """SIGTERM every descendant, SIGKILL those still alive after `grace_s`."""
    procs = descendants()
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace_s)


def mark_cancelled(flow_run_ids: list[str], timeout_s: float = 5.0) -> int:
    """Set each flow run's state to Cancelled (newest first); returns how many were marked."""
    if not flow_run_ids:
        return 0
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    marked = 0
    try:
        with get_client(sync_client=True, httpx_settings={"timeout": timeout_s}) as client:
            for run_id in reversed(flow_run_ids):
                try:
                    client.set_flow_run_state(run_id, Cancelled(message="interrupted by the user"), force=True)
                    marked += 1
                except Exception:  # noqa: BLE001 - a finished subflow keeps its final state
                    pass
    except Exception:  # noqa: BLE001 - the server may already be gone: nothing to mark
        pass
    return marked


@contextmanager
def stop_on_signals(flow_run_ids: Callable[[], list[str]] = list) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM stop everything this process started and exit
    (one line on stderr says so)."""
    from eip_al.label.backends.local import cancel_local

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cancel_local()
        n = mark_cancelled(flow_run_ids())
        kill_descendants()
        sys.stdout.flush()
        print(f"interrupted ({name}): stopped{'; Prefect run marked cancelled' if n else ''}. Finished "
              "steps and labels are kept: run the same command again to continue", file=sys.stderr, flush=True)
        os._exit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
