"""Benchmark: MD and eIP-UDD walker steps per second on a 288-atom water box, on CPU.

Model at the paper's size (PaiNN, 128 features, 3 interactions, 5 Å cutoff, 20 radial
functions, float32; random weights: the cost does not depend on their values). Each
round runs `--steps` steps of a full walker (`run_trajectory`: ASE Berendsen integrator,
model call, collapse check, log and candidate writing) for MD and then UDD (reference
form, limiter on); rounds alternate so a change in machine load hits both alike.
Reported per kind: median wall and process-CPU seconds per step, steps per second; and
the UDD/MD cost ratio (issue 5 asks ≤ 1.3) and the speed-up over the 1.4 s per UDD step
of the authors' code on 2 cores (issue 5 asks ≥ 3). Also timed alone: one collapse
check, one unbiased and one biased model evaluation.

Writes bench/results/explore.json (2 threads, the default) or
explore-<n>threads.json, with machine info and the load average before and after: on a
shared machine, compare the CPU-time ratio rather than wall times.

Run: python bench/bench_explore.py [--steps 20] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from summarize import machine_info  # bench/ is on sys.path when run as a script

from eip_al.atomic import atomic_write_text
from eip_al.calculator import EIPCalculator
from eip_al.config import CollapseConfig, UDDConfig, WalkerConfig
from eip_al.explore import CollapseDetector, UDDCalculator, run_trajectory
from eip_al.explore.walker import start_atoms
from eip_al.model import EIPModel, ModelSpec
from eip_al.systems import build_water_box

RESULTS = Path(__file__).parent / "results"
AUTHORS_UDD_STEP_S = 1.4  # authors' code, 288-atom water, 2 CPU cores (issue 5)


def paper_model() -> EIPModel:
    torch.manual_seed(0)
    spec = ModelSpec(n_features=128, n_interactions=3, cutoff=5.0, n_rbf=20, elements=(1, 8))
    return EIPModel(spec, element_energies=[-13.6, -430.0])


def per_call(fn, n: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call of `fn`, over n calls after one warm-up call."""
    fn()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - w0) / n, (time.process_time() - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="walker steps per round and kind")
    ap.add_argument("--rounds", type=int, default=3, help="alternating MD/UDD rounds")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    box = build_water_box(96, 0.997, seed=0)
    model = paper_model()
    calcs = {
        "md": EIPCalculator.from_model(model),
        "udd": UDDCalculator(EIPCalculator.from_model(model), UDDConfig()),
    }
    # A random model is not a physical potential: loosen the collapse limits so the short
    # timing runs never stop early (the checks still run every step).
    loose = CollapseConfig(min_distance=0.1, max_oh_bond=5.0, max_temperature_factor=1e6, max_force=1e6)
    wc = WalkerConfig(steps=args.steps, timestep_fs=0.5, temperature_K=300.0, sample_every=10)
    load_before = os.getloadavg()
    walls: dict[str, list[float]] = {"md": [], "udd": []}
    cpus: dict[str, list[float]] = {"md": [], "udd": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds + 1):  # round 0 warms up (threads, allocator, lists)
            for kind, calc in calcs.items():
                atoms = start_atoms(box, 300.0, np.random.default_rng(r))
                w0, c0 = time.perf_counter(), time.process_time()
                out = run_trajectory(atoms, calc, wc, loose, Path(tmp) / f"{kind}.csv", Path(tmp) / f"{kind}.extxyz")
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                if out.collapsed:
                    raise SystemExit(f"{kind} run collapsed during the benchmark: {out.collapse_reason}")
                if r > 0:
                    walls[kind].append(wall / (args.steps + 1))  # +1: the step-0 evaluation
                    cpus[kind].append(cpu / (args.steps + 1))
                print(f"round {r} {kind}: {wall / (args.steps + 1):.3f} s/step", flush=True)

    atoms = start_atoms(box, 300.0, np.random.default_rng(0))
    det = CollapseDetector(CollapseConfig(), atoms, 300.0)
    rng = np.random.default_rng(1)

    def check() -> None:
        atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
        det.check(atoms.positions, 0.0, np.zeros((len(atoms), 3)), np.ones(len(atoms)), 300.0)

    check_wall, _ = per_call(check, 200)

    def evaluate(calc) -> None:
        atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
        atoms.calc = calc
        atoms.get_forces()

    eval_md = per_call(lambda: evaluate(calcs["md"]), 5)
    eval_udd = per_call(lambda: evaluate(calcs["udd"]), 5)
    load_after = os.getloadavg()

    med = {k: statistics.median(v) for k, v in walls.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpus.items()}
    result = {
        "benchmark": "explore",
        "created_at": datetime.now(UTC).isoformat(),
        "machine": {**machine_info(args.threads), "numpy": np.__version__},
        "load_average_1_5_15_before": list(load_before),
        "load_average_1_5_15_after": list(load_after),
        "system": {"atoms": len(box), "molecules": 96, "cell_A": float(box.cell[0, 0])},
        "model": {"n_features": 128, "n_interactions": 3, "cutoff_A": 5.0, "n_rbf": 20, "dtype": "float32"},
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "walker_step_s": {k: {"median": med[k], "all": walls[k]} for k in walls},
        "walker_step_cpu_s": {k: {"median": med_cpu[k], "all": cpus[k]} for k in cpus},
        "steps_per_s": {k: 1.0 / med[k] for k in med},
        "udd_over_md": med["udd"] / med["md"],
        "udd_over_md_cpu": med_cpu["udd"] / med_cpu["md"],
        "target_udd_over_md": 1.3,
        "authors_udd_step_s": AUTHORS_UDD_STEP_S,
        "speedup_vs_authors": AUTHORS_UDD_STEP_S / med["udd"],
        "target_speedup_vs_authors": 3.0,
        "collapse_check_s": check_wall,
        "model_eval_s": {"md": {"wall": eval_md[0], "cpu": eval_md[1]},
                         "udd": {"wall": eval_udd[0], "cpu": eval_udd[1]}},
    }
    path = RESULTS / ("explore.json" if args.threads == 2 else f"explore-{args.threads}threads.json")
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("steps_per_s", "udd_over_md", "udd_over_md_cpu",
                                             "speedup_vs_authors", "collapse_check_s")}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
