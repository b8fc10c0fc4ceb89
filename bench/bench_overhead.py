"""Per-generation orchestration overhead: wall time not spent in training, MD/UDD or labeling.

Runs the demo config (configs/al-water-demo.yaml) in a fresh run directory under
bench/data/overhead/ (the seed data is made first and not counted). For every generation:

* engine-free (`eip_al.pipeline` steps called one after the other, each timed here);
* with Prefect (`flows.al.active_learning`, ephemeral mode, `flow.max_workers: 1` so tasks
  run one at a time and the subtraction below is exact; the Prefect start-up is included).

Work ("science") time is read from the artifacts: training = TrainingResult.wall_time_s
(the epoch loop), MD = Σ ExplorationResult.wall_time_s (whole walker trajectories),
labeling = Σ JobOutcome.runtime_s (the labeler's own compute: the mock force field here,
CP2K in production). Overhead = measured wall − those three; per step it is the step's
wall minus the work inside it, so select, merge and report are overhead by definition.

Run: python bench/bench_overhead.py [--config configs/al-water-demo.yaml] [--no-prefect]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from summarize import git_commit, machine_info, now_iso

from eip_al import pipeline
from eip_al.atomic import atomic_write_text
from eip_al.config import ALConfig, load_config
from eip_al.rundir import RunDir, load_valid
from eip_al.schemas import ExplorationSummary, LabelingResult, TrainingResult

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT = HERE / "results" / "overhead.json"
WORK = HERE / "data" / "overhead"

STEPS: tuple[tuple[str, Callable[[ALConfig, RunDir, int], Any]], ...] = (
    ("train", pipeline.train_step),
    ("explore", pipeline.explore_step),
    ("select", pipeline.select_step),
    ("label", pipeline.label_step),
    ("merge", pipeline.merge_step),
    ("report", pipeline.report_step),
)


def work_times(run: RunDir, gen: int) -> dict[str, float]:
    """Science time of generation `gen` from its artifacts (s): train, md, label."""
    train = load_valid(run.artifact_path(gen, "train"), TrainingResult)
    explore = load_valid(run.artifact_path(gen, "explore"), ExplorationSummary)
    label = load_valid(run.artifact_path(gen, "label"), LabelingResult)
    if train is None or explore is None or label is None:
        raise RuntimeError(f"{run.root}: generation {gen} lacks a train, explore or label artifact")
    return {
        "train_s": train.wall_time_s,
        "md_s": sum(w.wall_time_s for w in explore.walkers),
        "label_s": sum(o.runtime_s or 0.0 for o in label.outcomes),
    }


def overhead_record(gen: int, total_s: float, work: dict[str, float], steps: dict[str, float] | None) -> dict[str, Any]:
    """One generation's numbers; per-step overhead = step wall − the work done inside it."""
    overhead = total_s - sum(work.values())
    rec: dict[str, Any] = {"generation": gen, "total_s": total_s, **work, "overhead_s": overhead,
                           "overhead_fraction": overhead / total_s if total_s > 0 else None}
    if steps is not None:
        inside = {"train": work["train_s"], "explore": work["md_s"], "label": work["label_s"]}
        rec["step_wall_s"] = steps
        rec["step_overhead_s"] = {k: v - inside.get(k, 0.0) for k, v in steps.items()}
    return rec


def fresh_run(cfg: ALConfig, root: Path) -> RunDir:
    """An empty run directory at `root` holding `cfg`, with its seed dataset made."""
    if root.exists():
        shutil.rmtree(root)
    run = RunDir(root)
    run.init(cfg)
    pipeline.seed_step(cfg, run)
    return run


def run_pipeline(cfg: ALConfig, root: Path) -> list[dict[str, Any]]:
    """Every generation step by step without an engine; each step timed."""
    run = fresh_run(cfg, root)
    records = []
    for gen in range(cfg.generations):
        steps: dict[str, float] = {}
        for name, step in STEPS:
            t0 = time.perf_counter()
            step(cfg, run, gen)
            steps[name] = time.perf_counter() - t0
        records.append(overhead_record(gen, sum(steps.values()), work_times(run, gen), steps))
        print(f"pipeline gen {gen}: {records[-1]['overhead_s']:.2f} s overhead of {records[-1]['total_s']:.1f} s",
              flush=True)
        if pipeline.stop_reason(cfg, run, gen):
            break
    return records


def run_prefect(cfg: ALConfig, root: Path) -> dict[str, Any]:
    """The Prefect flow over all generations (seed pre-made); overhead of the whole flow."""
    from flows.al import active_learning

    cfg = cfg.model_copy(update={"flow": cfg.flow.model_copy(update={"max_workers": 1})})
    run = fresh_run(cfg, root)
    t0 = time.perf_counter()
    out = active_learning(config=cfg.model_dump(mode="json"), run_dir=str(run.root))
    total = time.perf_counter() - t0
    gens = int(out["generations_done"])
    work = [work_times(run, g) for g in range(gens)]
    summed = {k: sum(w[k] for w in work) for k in ("train_s", "md_s", "label_s")}
    rec = overhead_record(-1, total, summed, None)
    rec.pop("generation")
    return rec | {"generations": gens, "overhead_s_per_generation": rec["overhead_s"] / gens}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "al-water-demo.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-prefect", action="store_true", help="skip the Prefect flow measurement")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    info = machine_info(args.threads, cfg.train.device)
    t0 = time.perf_counter()
    records = run_pipeline(cfg, WORK / "pipeline")
    prefect = None if args.no_prefect else run_prefect(cfg, WORK / "prefect")
    by_step: dict[str, float] = {}
    for r in records:
        for k, v in r["step_overhead_s"].items():
            by_step[k] = by_step.get(k, 0.0) + v
    result = {
        "benchmark": "overhead", "date": now_iso(), "git": git_commit(), "machine": info,
        "config": str(args.config.resolve().relative_to(ROOT)) if args.config.resolve().is_relative_to(ROOT) else str(args.config),
        "generations": records,
        "overhead_by_step": by_step,
        "prefect": prefect,
        "wall_s": time.perf_counter() - t0,
        "notes": ("Overhead = wall − (training loop + MD/UDD walkers + labeler compute), per generation, "
                  "engine-free pipeline; 'prefect' is the whole flow with one worker, start-up included. "
                  "CPU only; the machine was shared with other engineers' jobs (timings noisy)."),
    }
    atomic_write_text(RESULT, json.dumps(result, indent=1) + "\n")
    print(json.dumps({"overhead_by_step": by_step, "prefect": prefect}, indent=1))
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
