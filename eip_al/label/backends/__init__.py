"""Where labeling jobs run, behind one interface: `Backend`.

The registry `eip_al.registries.BACKENDS` names one class per `labeler.backend`:

* `local` (`backends/local.py`): job scripts or in-process labelers here, `n_parallel` at once;
* `slurm` (`backends/slurm.py`): one job array per batch (plus one for SCF retries),
  re-attached after a restart;
* `export` (`backends/export.py`): nothing runs; the user runs the scripts elsewhere and
  `eip-al ingest` collects them.

`eip_al.label.jobs` prepares, parses and records jobs and only ever asks the batch's backend
how to run them; adding a backend is one module here plus one line in `BACKENDS`. What a
job script does and the `run.status` it leaves: `backends/script.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Protocol

from eip_al.config import LabelerConfig
from eip_al.label.base import Labeler, import_object
from eip_al.registries import BACKENDS
from eip_al.schemas import JobOutcome

Runner = Callable[[list[Path]], None]
"""Runs the current attempt of each job directory now and returns when they have ended."""

LabelOne = Callable[[Path, Runner | None], JobOutcome]
"""Labels one job directory with a runner (None: only read what is there), records its final
outcome and returns it."""

RetryOne = Callable[[Path], bool]
"""Parses one job directory and prepares a retry if the labeler offers one: True if it did."""


class BatchView(Protocol):
    """What a backend sees of a labeling batch (eip_al.label.jobs.LabelBatch)."""

    cfg: LabelerConfig
    labeler: Labeler
    label_dir: Path
    generation: int

    def rel(self, path: Path) -> str: ...


def batch_name(batch: BatchView) -> str:
    """'seed' or 'gen N': how progress lines name a batch."""
    return "seed" if batch.generation < 0 else f"gen {batch.generation}"


class Backend(ABC):
    """How a batch's jobs run. Stateless: every method gets the batch it acts on."""

    name: ClassVar[str]
    runs_here: ClassVar[bool] = False  # the labeler's program runs on this machine
    runs_later: ClassVar[bool] = False  # jobs run elsewhere, later: unfinished is expected

    def problems(self, cfg: LabelerConfig) -> list[str]:
        """What stops this backend from working on this machine (for `eip-al check`)."""
        return []

    def describe(self, cfg: LabelerConfig) -> str:
        """One line for the run plan."""
        return self.name

    @abstractmethod
    def runner(self, batch: BatchView) -> Runner | None:
        """How one job runs now, blocking (None: it does not run here)."""

    @abstractmethod
    def run_all(self, batch: BatchView, todo: Sequence[Path], label: LabelOne, retry: RetryOne) -> None:
        """Run every job directory in `todo` (all unfinished), retries included, and record
        each outcome with `label`."""

    def retry_hint(self, batch: BatchView, retry_dir: Path) -> str:
        """How a prepared but not yet run retry gets run."""
        return "run the labeling again to run it"

    def unfinished_hint(self, batch: BatchView, n_not_run: int) -> str:
        """What to add to the failure-budget message about jobs that have not run ('' for nothing)."""
        return ""


_BACKENDS: dict[str, Backend] = {}


def backend_for(name: str) -> Backend:
    """The backend `labeler.backend: name` selects (eip_al.registries.BACKENDS)."""
    if name not in _BACKENDS:
        cls = import_object(BACKENDS[name], f"labeler.backend {name}")
        _BACKENDS[name] = cls()
    return _BACKENDS[name]
