"""Labeling throughput: writing 1000 CP2K jobs and parsing 1000 CP2K outputs (targets 3 s, 10 s).

Jobs: 1000 distinct 96-water frames (288 atoms, the production box) prepared with the
PBE-D3 template (`backend: export`, so no CP2K runs): input.inp, run.sh, frame.extxyz
and the manifest. Timed separately: loading the labeler once per process (import of
cp2k-input-tools, the cached `cp2k.psmp --xml` schema, parsing and validating the deck),
the first preparation, and a rerun that finds every job unchanged.

Outputs: classification of 1000 CP2K outputs (`parse_attempt`: read, check termination,
SCF, atom count, positions; convert). Two sizes: the real 1-water CP2K 2023.1 output of
tests/data/cp2k/ok, and a 288-atom output made from it by replacing its coordinate and
force tables with a 96-water box in the same layout (no 96-water CP2K output is stored;
real ones differ only in longer SCF logs).

    python bench/bench_label.py            # writes bench/results/label.json

Wall and CPU (process) times are both recorded: on a shared, oversubscribed machine
(see load_average_at_start) the CPU time is the better estimate of the unloaded wall time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import Atoms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from summarize import machine_info  # noqa: E402  (bench/ is on sys.path when run as a script)

from eip_al.config import CP2KConfig, LabelerConfig  # noqa: E402
from eip_al.io import frame_id, read_frames  # noqa: E402
from eip_al.label.jobs import LabelBatch, prepare_jobs  # noqa: E402
from eip_al.label.parse import parse_attempt  # noqa: E402
from eip_al.systems import build_water_box  # noqa: E402

RESULT = ROOT / "bench" / "results" / "label.json"
N = 1000
STORED = ROOT / "tests" / "data" / "cp2k" / "ok"


def machine() -> dict[str, object]:
    """Machine record (bench/summarize.machine_info) plus numpy and the CP2K version."""
    try:
        cp2k = subprocess.run(
            ["cp2k.psmp", "--version"], capture_output=True, text=True, timeout=30
        ).stdout
        cp2k_version = cp2k.splitlines()[0].strip() if cp2k else None
    except FileNotFoundError:
        cp2k_version = None
    return {**machine_info(), "numpy": np.__version__, "cp2k": cp2k_version}


def frames(n: int) -> list[Atoms]:
    base = build_water_box(96, seed=0)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        a = base.copy()
        a.positions += rng.normal(0, 0.02, a.positions.shape)
        a.info.update(
            frame_id=frame_id(a), generation=0, source="md", walker="md-300K-0"
        )  # as selected
        out.append(a)
    return out


def big_output(atoms: Atoms, text: str) -> str:
    """The stored 1-water output with coordinate and force tables for `atoms` (same layout)."""
    coords = "\n".join(
        f"{i:7d} {1 + (s == 'H'):4d} {s:<2} {8 if s == 'O' else 1:4d} {x:13.6f} {y:13.6f} {z:13.6f}"
        f"   {6.0 if s == 'O' else 1.0:.4f}  {15.9994 if s == 'O' else 1.0079:.4f}"
        for i, (s, (x, y, z)) in enumerate(
            zip(atoms.get_chemical_symbols(), atoms.positions, strict=True), 1
        )
    )
    rng = np.random.default_rng(1)
    forces = "\n".join(
        f"{i:7d} {1 + (s == 'H'):6d}      {s:<2} {fx:21.12f} {fy:18.12f} {fz:18.12f}"
        for i, (s, (fx, fy, fz)) in enumerate(
            zip(atoms.get_chemical_symbols(), rng.normal(0, 0.02, (len(atoms), 3)), strict=True), 1
        )
    )
    text = re.sub(
        r"(ATOMIC COORDINATES IN ANGSTROM\n\n.*?\n)(.*?)(\n\n)",
        lambda m: m.group(1) + coords + m.group(3),
        text,
        count=1,
        flags=re.S,
    )
    return re.sub(
        r"(ATOMIC FORCES in \[a\.u\.\]\n\n.*?\n)(.*?)(\n SUM OF)",
        lambda m: m.group(1) + forces + m.group(3),
        text,
        count=1,
        flags=re.S,
    )


def bench_jobs(tmp: Path, fr: list[Atoms]) -> dict[str, float]:
    t0 = time.perf_counter()
    cfg = LabelerConfig(kind="cp2k", backend="export", cp2k=CP2KConfig())
    batch = LabelBatch(cfg, tmp / "label", tmp, 0)
    t_load = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    prepare_jobs(batch, fr, "bench")
    t_first, c_first = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    prepare_jobs(batch, fr, "bench")
    t_again, c_again = time.perf_counter() - t0, time.process_time() - c0
    size = sum(p.stat().st_size for p in (tmp / "label" / "jobs" / "000000").iterdir())
    return {
        "n_jobs": len(fr),
        "n_atoms": len(fr[0]),
        "labeler_load_s": t_load,
        "prepare_s": t_first,
        "prepare_cpu_s": c_first,
        "prepare_per_job_ms": 1e3 * t_first / len(fr),
        "prepare_again_unchanged_s": t_again,
        "prepare_again_unchanged_cpu_s": c_again,
        "job_dir_bytes": size,
    }


def bench_parse(tmp: Path, atoms: Atoms, text: str, status: str, label: str) -> dict[str, float]:
    root = tmp / label
    for i in range(N):
        d = root / f"{i:06d}"
        d.mkdir(parents=True)
        (d / "output.log").write_text(text)
        (d / "run.status").write_text(status)
    dirs = sorted(root.iterdir())
    runs, cpu = [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        results = [parse_attempt(d.name, d, atoms) for d in dirs]
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert all(r.ok for r in results), results[0]
    return {
        "n_outputs": N,
        "n_atoms": len(atoms),
        "output_bytes": len(text.encode()),
        "parse_s_median_of_3": statistics.median(runs),
        "parse_s_runs": runs,
        "parse_cpu_s_runs": cpu,
    }


def main() -> None:
    info = {
        "benchmark": "label",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-label-"))
    os.environ.setdefault("EIP_AL_CACHE_DIR", str(tmp / "cache"))
    try:
        fr = frames(N)
        info["generate"] = bench_jobs(tmp / "gen", fr)
        text = (STORED / "output.log").read_text()
        status = (STORED / "run.status").read_text()
        water = read_frames(STORED / "frame.extxyz", require_labels=False)[0]
        info["parse_1_water_real"] = bench_parse(tmp / "parse", water, text, status, "small")
        info["parse_96_water"] = bench_parse(
            tmp / "parse", fr[0], big_output(fr[0], text), status, "big"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["targets"] = {"prepare_1000_jobs_s": 3.0, "parse_1000_outputs_s": 10.0}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
