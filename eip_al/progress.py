"""Progress lines of long-running steps (training, walkers, labeling).

Each line goes to stderr as plain text (readable in a terminal, a Slurm log or Prefect's
captured prints; rich live bars only where stderr is a terminal) and, unchanged, to the
``eip_al.progress`` logger, which an orchestrator may forward: flows/ relays it into the
root Prefect flow run, so the UI and ``prefect flow-run logs`` show the walkers and the
labeling of every generation in one place. Without a handler the logger stays silent
(Python's default level for it is WARNING).
"""

from __future__ import annotations

import logging
import math
import sys
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

PROGRESS_EVERY_S = 10.0  # seconds between the progress lines of one loop
LOGGER = logging.getLogger("eip_al.progress")


def say(tag: str, message: str) -> None:
    """One progress line ``[tag] message`` on stderr and on the progress logger."""
    line = f"[{tag}] {message}"
    print(line, file=sys.stderr, flush=True)
    LOGGER.info(line)


class Throttle:
    """`due()` is True at most once every `every_s` seconds: from the first call on, or,
    with `wait_first`, only once `every_s` have passed since construction."""

    def __init__(self, every_s: float = PROGRESS_EVERY_S, *, wait_first: bool = False) -> None:
        self.every_s = every_s
        self._last = time.perf_counter() if wait_first else -math.inf

    def due(self) -> bool:
        now = time.perf_counter()
        if now - self._last < self.every_s:
            return False
        self._last = now
        return True


def bar(enabled: bool) -> Progress:
    """A transient rich progress bar (description, bar, done/total, elapsed); `enabled=False`
    shows nothing."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=True,
    )
