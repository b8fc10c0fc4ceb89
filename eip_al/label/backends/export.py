"""`labeler.backend: export`: nothing runs here; the job directories are the product.

Each job directory is self-contained (its `run.sh` runs it anywhere); `jobs/tasks.txt`
lists them. The user runs them elsewhere and `eip-al ingest` collects what finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from eip_al.label.backends import Backend, BatchView, LabelOne, RetryOne


class ExportBackend(Backend):
    """Writes jobs and runs none of them."""

    name = "export"
    runs_later = True

    def runner(self, batch: BatchView) -> None:
        return None

    def run_all(self, batch: BatchView, todo: Sequence[Path], label: LabelOne, retry: RetryOne) -> None:
        return None

    def retry_hint(self, batch: BatchView, retry_dir: Path) -> str:
        return f"run {batch.rel(retry_dir / 'run.sh')}, then ingest again"

    def unfinished_hint(self, batch: BatchView, n_not_run: int) -> str:
        if not n_not_run:
            return ""
        return (
            f". {n_not_run} exported jobs have not run yet: run the scripts listed in "
            f"{batch.label_dir / 'jobs' / 'tasks.txt'} (each job dir is self-contained), "
            "then `eip-al ingest` this directory"
        )
