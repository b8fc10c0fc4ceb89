"""Benchmark: the mock q-SPC/Fw force field, seed MD and mock labeling on CPU.

Timed: one energy+force evaluation (`water_energy_forces`, vesin neighbor list included)
for boxes of 16, 32, 96 and 256 waters at 0.997 g/cm³ (target: a few ms for 96 waters /
288 atoms); one step of ASE Langevin MD with `MockWaterCalculator` for the same boxes; and
the mock labeler's per-job cost (prepare + execute + parse, with the atomic writes) for a
288-atom frame. Medians (wall and process CPU) over `--repeats` after one warm-up call.

Writes bench/results/mock.json with machine info and the load average.

Run: python bench/bench_mock.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from ase import units
from ase.md.langevin import Langevin
from summarize import machine_info  # bench/ is on sys.path when run as a script

from eip_al.atomic import atomic_write_text
from eip_al.label.mock import MockLabeler, MockWaterCalculator, WaterFF, water_energy_forces
from eip_al.systems import build_water_box

RESULT = Path(__file__).parent / "results" / "mock.json"


def median_ms(fn, repeats: int) -> tuple[float, float]:
    """Median wall and process-CPU milliseconds per call (CPU time is less sensitive to
    other processes sharing the cores)."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return round(1e3 * statistics.median(wall), 3), round(1e3 * statistics.median(cpu), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    ff = WaterFF()
    rows = []
    for n in (16, 32, 96, 256):
        atoms = build_water_box(n, seed=0)
        atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
        eval_ms, eval_cpu = median_ms(lambda a=atoms: water_energy_forces(a, ff), args.repeats)
        md = atoms.copy()
        md.calc = MockWaterCalculator()
        dyn = Langevin(md, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False,
                       rng=np.random.default_rng(0))
        step_ms, step_cpu = median_ms(lambda d=dyn: d.run(1), args.repeats)
        box = float(atoms.cell[0, 0])
        rows.append({"n_molecules": n, "n_atoms": len(atoms), "box_A": round(box, 3),
                     "cutoff_above_half_box": ff.cutoff > box / 2,
                     "energy_forces_ms": eval_ms, "energy_forces_cpu_ms": eval_cpu,
                     "langevin_step_ms": step_ms, "langevin_step_cpu_ms": step_cpu})
        print(rows[-1])

    frame = build_water_box(96, seed=1)
    labeler = MockLabeler()
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def one_job() -> None:
            job = Path(tmp) / f"{next(counter):06d}"
            labeler.prepare(frame, job)
            labeler.execute([job])
            labeler.parse(job, frame)

        job_ms, job_cpu = median_ms(one_job, max(5, args.repeats // 5))
    print({"mock_label_job_288_atoms_ms": job_ms, "cpu_ms": job_cpu})

    result = {
        "benchmark": "mock force field, seed MD step, mock labeling",
        "date": datetime.now(UTC).isoformat(),
        "machine": {**machine_info(), "numpy": np.__version__},
        "note": "median per call; wall times rise when other processes share the cores "
        "(see load_average), CPU times much less",
        "force_field": {"cutoff_A": ff.cutoff, "alpha_per_A": ff.alpha},
        "repeats": args.repeats,
        "boxes": rows,
        "mock_label_job_288_atoms_ms": job_ms,
        "mock_label_job_288_atoms_cpu_ms": job_cpu,
        "target": "energy+forces of 288 atoms in a few ms",
    }
    atomic_write_text(RESULT, json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
