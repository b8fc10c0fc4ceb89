"""Label one mock job directory: what a mock job's `run.sh` runs (Slurm, export).

    python -m eip_al.label.mock_job [JOB_DIR]     (default: the current directory)

Reads `job.json` (frame id and the labeler config it was prepared with) and
`structure.extxyz`, writes `result.json` exactly as in-process labeling would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from eip_al.config import MockLabelerConfig
from eip_al.label.mock import JOB_FILE, MockLabeler


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job_dir = Path(args[0] if args else ".")
    try:
        job = json.loads((job_dir / JOB_FILE).read_text())
        config = MockLabelerConfig.model_validate(job["mock"])
    except (OSError, ValueError, KeyError) as exc:
        print(f"eip-al mock job {job_dir}: cannot read {JOB_FILE}: {exc}", file=sys.stderr)
        return 2
    MockLabeler(config).execute([job_dir])
    return 0


if __name__ == "__main__":
    sys.exit(main())
