"""Label one job directory of an in-Python labeler: what its `run.sh` runs (Slurm, export).

    python -m eip_al.label.job [JOB_DIR]     (default: the current directory)

Reads `job.json` (frame id, labeler kind and its settings) and `structure.extxyz`, rebuilds
the labeler through the registry and writes `result.json` exactly as in-process labeling
would (`eip_al.label.jobfile`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from eip_al.config import ConfigError, LabelerConfig
from eip_al.label.jobfile import JOB_FILE
from eip_al.registries import LABELERS


def main(argv: list[str] | None = None, kind: str | None = None) -> int:
    """Label the job in argv[0]; `kind` is for job files that do not name it (the mock's)."""
    args = sys.argv[1:] if argv is None else argv
    job_dir = Path(args[0] if args else ".")
    try:
        job = json.loads((job_dir / JOB_FILE).read_text())
        kind = kind or job["kind"]
        section = LABELERS[kind].section
        cfg = LabelerConfig.model_validate({"kind": kind, **({section: job[section]} if section else {})})
        from eip_al.label.jobs import get_labeler

        labeler = get_labeler(cfg)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ConfigError and ValidationError are ValueErrors
        what = f"eip-al {kind} job" if kind else "eip-al job"
        detail = str(exc) if isinstance(exc, ConfigError) else f"cannot read {JOB_FILE}: {exc}"
        print(f"{what} {job_dir}: {detail}", file=sys.stderr)
        return 2
    labeler.execute([job_dir])
    return 0


if __name__ == "__main__":
    sys.exit(main())
