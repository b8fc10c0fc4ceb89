"""Benchmark: MD and eIP-UDD walker steps per second on a 288-atom water box (CPU or GPU).

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
shared machine, compare the CPU-time ratio rather than wall times. `--device cuda` runs
the same on a GPU (float32) and writes explore-cuda.json, compared with the authors'
35.4 ms per UDD step on an H100.

`--replicas 1 2 4` instead measures batched walker replicas (`ReplicaBatch`: one model
pass per step for all replicas) against the same replicas run one after another, for
each `--atoms` box size, alternating the two modes per round (both from a worker
thread, as the batch's replicas run); writes
explore-replicas[-cuda].json with steps per second of all replicas together.

Run: python bench/bench_explore.py [--steps 20] [--rounds 3] [--threads 2] [--device cpu]
     python bench/bench_explore.py --replicas 1 2 4 [--atoms 96 288] [--kind udd]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from summarize import git_commit, machine_info  # bench/ is on sys.path when run as a script

from eip_al import malloc
from eip_al.atomic import atomic_write_text
from eip_al.calculator import EIPCalculator
from eip_al.config import CollapseConfig, UDDConfig, WalkerConfig
from eip_al.explore import CollapseDetector, ReplicaBatch, UDDCalculator, run_trajectory
from eip_al.explore.biases import PreparedBias
from eip_al.explore.device import DeviceEngine
from eip_al.explore.walker import WalkerJob, WalkerPlan, start_atoms
from eip_al.model import EIPModel, ModelSpec
from eip_al.rundir import RunDir
from eip_al.screening import build_screen
from eip_al.systems import build_water_box

RESULTS = Path(__file__).parent / "results"
AUTHORS_UDD_STEP_S = 1.4  # authors' code, 288-atom water, 2 CPU cores (issue 5)
AUTHORS_UDD_STEP_S_H100 = 0.0354  # authors' code, 288-atom water, one H100 (issue 23)
# A random model is not a physical potential: loose collapse limits keep the short timing
# runs from stopping early (the checks still run every step).
LOOSE = CollapseConfig(min_distance=0.1, max_oh_bond=5.0, max_temperature_factor=1e6, max_force=1e6)


def paper_model(device: str = "cpu") -> EIPModel:
    """The paper's model size with random weights, float32, on `device`."""
    torch.manual_seed(0)
    spec = ModelSpec(n_features=128, n_interactions=3, cutoff=5.0, n_rbf=20, elements=(1, 8))
    return EIPModel(spec, element_energies=[-13.6, -430.0]).to(device)


def make_calc(base: EIPCalculator, kind: str) -> EIPCalculator | UDDCalculator:
    return UDDCalculator(base, UDDConfig()) if kind == "udd" else base


def run_each(fns: list[Callable[[], object]]) -> list[object]:
    return [fn() for fn in fns]


def in_thread(fn: Callable, *args: object) -> tuple[object, float, float]:
    """fn(*args) in a worker thread: (value, wall s, process CPU s). Both replica modes run
    this way: on the loaded shared machine torch's OpenMP ran several times slower when
    called from the main thread than from another one (BENCHMARKS.md)."""
    box: list = []
    worker = threading.Thread(target=lambda: box.append(fn(*args)))
    w0, c0 = time.perf_counter(), time.process_time()
    worker.start()
    worker.join()
    return box[0], time.perf_counter() - w0, time.process_time() - c0


def device_jobs(template: EIPCalculator, box, kind: str, replicas: int, steps: int, tmp: Path,
                r: int) -> tuple[DeviceEngine, list[WalkerJob]]:
    """The device engine on `template`'s model and `replicas` walker jobs (the ASE modes' starts)."""
    wc = WalkerConfig(kind=kind, steps=steps, timestep_fs=0.5, temperature_K=300.0, sample_every=10)
    run = RunDir(tmp / f"device-{r}")
    jobs = []
    for k in range(replicas):
        atoms = start_atoms(box, 300.0, np.random.default_rng([r, k]))
        base = EIPCalculator.sharing(template)
        bias = (PreparedBias(UDDCalculator(base, UDDConfig()), UDDConfig().model_dump(mode="json"))
                if kind == "udd" else PreparedBias(base, None))
        jobs.append(WalkerJob(run, 0, WalkerPlan(f"{kind}-300K-{k}", wc, k), atoms, LOOSE,
                              build_screen(LOOSE, atoms.numbers), bias, f"bench-{r}-{k}", 10**9))
    return DeviceEngine(template), jobs


def replica_rounds(template: EIPCalculator, box, kind: str, replicas: int, steps: int, rounds: int,
                   modes: Sequence[str] = ("sequential", "batched")) -> dict:
    """Wall and CPU seconds of `replicas` walkers of `steps` steps in each of `modes`:
    sequential and batched (ASE engine, one by one or sharing passes), device (device engine);
    every mode on `template`'s model (compiled in the warm-up round when it is)."""
    wc = WalkerConfig(steps=steps, timestep_fs=0.5, temperature_K=300.0, sample_every=10)
    times: dict[str, dict[str, list[float]]] = {m: {"wall": [], "cpu": []} for m in modes}

    def trajectories(calcs: list, tmp: Path, r: int) -> list[Callable[[], object]]:
        def one(k: int) -> object:
            atoms = start_atoms(box, 300.0, np.random.default_rng([r, k]))
            out = run_trajectory(atoms, calcs[k], wc, LOOSE, tmp / f"{k}.csv", tmp / f"{k}.extxyz", label=f"r{k}")
            if out.collapsed:
                raise RuntimeError(f"replica {k} collapsed during the benchmark: {out.collapse_reason}")
            return out
        return [lambda k=k: one(k) for k in range(replicas)]

    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds + 1):  # round 0 warms up
            for mode in times:
                if mode == "device":
                    engine, jobs = device_jobs(template, box, kind, replicas, steps, Path(tmp), r)
                    outcomes, wall, cpu = in_thread(engine.run, jobs)
                    collapsed = [o.collapse_reason for o in outcomes if not isinstance(o, BaseException) and o.collapsed]
                    if collapsed:
                        raise RuntimeError(f"a device walker collapsed during the benchmark: {collapsed[0]}")
                else:
                    if mode == "batched":
                        batch = ReplicaBatch(template)
                        bases = [batch.calculator() for _ in range(replicas)]
                    else:
                        bases = [EIPCalculator.sharing(template) for _ in range(replicas)]
                    calcs = [make_calc(b, kind) for b in bases]
                    fns = trajectories(calcs, Path(tmp), r)
                    if mode == "batched":
                        outcomes, wall, cpu = in_thread(batch.run, list(zip(bases, fns, strict=True)))
                    else:
                        outcomes, wall, cpu = in_thread(run_each, fns)
                failed = [o for o in outcomes if isinstance(o, BaseException)]
                if failed:
                    raise failed[0]
                if r > 0:
                    times[mode]["wall"].append(wall)
                    times[mode]["cpu"].append(cpu)
                print(f"{len(box)} atoms, {replicas} replicas, round {r} {mode}: {wall:.2f} s", flush=True)
    n_steps = replicas * (steps + 1)  # +1: each walker's step-0 evaluation
    out: dict = {}
    for mode, t in times.items():
        wall, cpu = statistics.median(t["wall"]), statistics.median(t["cpu"])
        out[mode] = {"wall_s": t["wall"], "replica_steps_per_s": n_steps / wall,
                     "wall_per_replica_step_ms": 1e3 * wall / n_steps, "cpu_per_replica_step_ms": 1e3 * cpu / n_steps}
    for mode in modes[1:]:  # speed-up of each mode over the first (sequential), median over rounds
        out["speedup" if mode == "batched" else f"speedup_{mode}"] = statistics.median(
            s / b for s, b in zip(times[modes[0]]["wall"], times[mode]["wall"], strict=True))
    return out


def replicas_main(args: argparse.Namespace) -> None:
    """`--replicas`: batched vs sequential throughput per box size and replica count."""
    template = EIPCalculator.from_model(paper_model(args.device), compile=args.compile)
    load_before = os.getloadavg()
    by_atoms: dict[str, dict] = {}
    for n_atoms in args.atoms:
        box = build_water_box(n_atoms // 3, 0.997, seed=0)
        by_atoms[str(len(box))] = {str(n): replica_rounds(template, box, args.kind, n, args.steps, args.rounds,
                                                          args.modes) for n in args.replicas}
    result = {
        "benchmark": "explore-replicas",
        "created_at": datetime.now(UTC).isoformat(),
        "git": git_commit(),
        "machine": {**machine_info(args.threads, args.device), "numpy": np.__version__},
        "note": args.note,
        "load_average_1_5_15_before": list(load_before),
        "load_average_1_5_15_after": list(os.getloadavg()),
        "kind": args.kind,
        "modes": args.modes,
        "compiled": args.compile,
        "malloc_tuned": malloc.keep_freed_memory(),
        "model": {"n_features": 128, "n_interactions": 3, "cutoff_A": 5.0, "n_rbf": 20, "dtype": "float32"},
        "steps_per_replica": args.steps,
        "rounds": args.rounds,
        "by_atoms": by_atoms,
        "target_speedup_4_replicas_cpu": 1.5,
        "target_speedup_8_replicas_gpu": 4.0,
    }
    suffix = ("" if args.device == "cpu" else f"-{args.device.split(':')[0]}") + args.suffix
    path = RESULTS / f"explore-replicas{suffix}.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(json.dumps({a: {n: {k: v for k, v in r.items() if k.startswith("speedup")} for n, r in d.items()}
                      for a, d in by_atoms.items()}, indent=2))
    print(f"wrote {path}")


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
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--replicas", type=int, nargs="+", help="measure batched vs sequential replicas")
    ap.add_argument("--atoms", type=int, nargs="+", default=[96, 288], help="box sizes for --replicas")
    ap.add_argument("--kind", choices=("md", "udd"), default="udd", help="walker kind for --replicas")
    ap.add_argument("--modes", nargs="+", default=["sequential", "batched", "device"],
                    choices=("sequential", "batched", "device"),
                    help="--replicas: ASE engine one by one / sharing passes, device engine (first = baseline)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the backbone (explore.compile)")
    ap.add_argument("--suffix", default="", help="appended to the results file name, e.g. -compiled")
    ap.add_argument("--note", default="", help="free text stored with --replicas results (e.g. shared cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.replicas:
        replicas_main(args)
        return

    box = build_water_box(96, 0.997, seed=0)
    model = paper_model(args.device)
    template = EIPCalculator.from_model(model, compile=args.compile)
    calcs = {kind: make_calc(EIPCalculator.sharing(template), kind) for kind in ("md", "udd")}
    wc = WalkerConfig(steps=args.steps, timestep_fs=0.5, temperature_K=300.0, sample_every=10)
    load_before = os.getloadavg()
    walls: dict[str, list[float]] = {"md": [], "udd": []}
    cpus: dict[str, list[float]] = {"md": [], "udd": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds + 1):  # round 0 warms up (threads, allocator, lists)
            for kind, calc in calcs.items():
                atoms = start_atoms(box, 300.0, np.random.default_rng(r))
                w0, c0 = time.perf_counter(), time.process_time()
                out = run_trajectory(atoms, calc, wc, LOOSE, Path(tmp) / f"{kind}.csv", Path(tmp) / f"{kind}.extxyz")
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
    authors = AUTHORS_UDD_STEP_S if args.device == "cpu" else AUTHORS_UDD_STEP_S_H100
    med_cpu = {k: statistics.median(v) for k, v in cpus.items()}
    result = {
        "benchmark": "explore",
        "created_at": datetime.now(UTC).isoformat(),
        "git": git_commit(),
        "machine": {**machine_info(args.threads, args.device), "numpy": np.__version__},
        "load_average_1_5_15_before": list(load_before),
        "load_average_1_5_15_after": list(load_after),
        "compiled": args.compile,
        "malloc_tuned": malloc.keep_freed_memory(),
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
        "authors_udd_step_s": authors,
        "speedup_vs_authors": authors / med["udd"],
        "target_speedup_vs_authors": 3.0,
        "collapse_check_s": check_wall,
        "model_eval_s": {"md": {"wall": eval_md[0], "cpu": eval_md[1]},
                         "udd": {"wall": eval_udd[0], "cpu": eval_udd[1]}},
    }
    if args.device != "cpu":
        path = RESULTS / f"explore-{args.device.split(':')[0]}{args.suffix}.json"
    else:
        path = RESULTS / (("explore" if args.threads == 2 else f"explore-{args.threads}threads") + f"{args.suffix}.json")
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("steps_per_s", "udd_over_md", "udd_over_md_cpu",
                                             "speedup_vs_authors", "collapse_check_s")}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
