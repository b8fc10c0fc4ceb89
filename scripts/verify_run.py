"""Check a finished run directory (used by CI after the README's main command).

    python3 scripts/verify_run.py RUN_DIR --snapshot FILE   # every generation finished; record hashes
    python3 scripts/verify_run.py RUN_DIR --compare FILE    # ... and nothing changed since the snapshot

"Finished" means: the config's `generations` (or fewer, when the run stopped as converged)
each have every step's artifact valid (a recorded-skipped audit has none), no labeling job failed as implausible_forces, and
the summary exists. Exit 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eip_al.atomic import sha256_file
from eip_al.pipeline import record_path
from eip_al.rundir import RunDir, load_valid
from eip_al.schemas import STEPS, GenerationRecord, LabelingResult


def problems(run: RunDir) -> list[str]:
    cfg = run.load_config()
    out = []
    for gen in range(cfg.generations):
        rec = load_valid(record_path(run, gen), GenerationRecord)
        done = {s.step for s in rec.steps if s.status in ("done", "skipped")} if rec else set()
        skipped = {s.step for s in rec.steps if s.status == "skipped"} if rec else set()
        missing = [s for s in STEPS
                   if s not in done or (s not in skipped and not run.artifact_path(gen, s).is_file())]
        if missing:
            out.append(f"generation {gen}: steps not finished: {', '.join(missing)}")
            continue
        la = load_valid(run.artifact_path(gen, "label"), LabelingResult)
        bad = la.failures_by_class.get("implausible_forces", 0) if la else 0
        if bad:
            out.append(f"generation {gen}: {bad} implausible label(s)")
        if rec.converged:
            break
    if not (run.root / "summary.html").is_file():
        out.append(f"{run.root}/summary.html missing")
    return out


def snapshot(run: RunDir) -> dict[str, str]:
    """sha256 of every file in the run directory (a second run must change none)."""
    return {
        str(p.relative_to(run.root)): sha256_file(p)
        for p in sorted(run.root.rglob("*")) if p.is_file()
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--snapshot", type=Path)
    group.add_argument("--compare", type=Path)
    args = ap.parse_args()
    run = RunDir(args.run_dir)
    found = problems(run)
    now = snapshot(run)
    if args.snapshot:
        args.snapshot.write_text(json.dumps(now, indent=1))
    else:
        before = json.loads(args.compare.read_text())
        changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        if changed:
            found.append(f"the second run changed {len(changed)} file(s), e.g. {', '.join(changed[:5])}")
    for p in found:
        print(f"verify_run: {p}", file=sys.stderr)
    if not found:
        print(f"verify_run: {run.root}: every generation finished" + ("; second run changed nothing" if args.compare else ""))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
