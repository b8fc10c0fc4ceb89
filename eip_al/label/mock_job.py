"""Label one mock job directory: what a mock job's `run.sh` runs (Slurm, export).

    python -m eip_al.label.mock_job [JOB_DIR]     (default: the current directory)

The generic `eip_al.label.job` for mock job files (whose job.json names no kind).
"""

from __future__ import annotations

import sys

from eip_al.label.job import main as _main


def main(argv: list[str] | None = None) -> int:
    return _main(argv, kind="mock")


if __name__ == "__main__":
    sys.exit(main())
