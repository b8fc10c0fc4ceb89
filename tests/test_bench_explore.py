"""Smoke test of bench/bench_explore.py's replica modes (real short walkers, no timing asserted):
every mode runs the same walkers, and the summarizer renders the device-engine columns."""

from __future__ import annotations

import sys
from pathlib import Path

from eip_al.calculator import EIPCalculator
from eip_al.systems import build_water_box
from tests.model_fixtures import torch_threads
from tests.test_explore import tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_explore  # noqa: E402
import summarize  # noqa: E402


def test_replica_modes_run_and_render() -> None:
    box = build_water_box(8, 0.997, seed=0)
    modes = ("sequential", "batched", "device")
    with torch_threads(1):
        out = bench_explore.replica_rounds(EIPCalculator.from_model(tiny_model()), box, "udd", 2, 3, 1, modes)
    for mode in modes:
        assert out[mode]["replica_steps_per_s"] > 0 and len(out[mode]["wall_s"]) == 1
    assert out["speedup"] > 0 and out["speedup_device"] > 0
    result = {"kind": "udd", "steps_per_replica": 3, "rounds": 1, "machine": {"device": "cpu"}, "modes": list(modes),
              "compiled": False, "by_atoms": {str(len(box)): {"2": out}}}
    text = summarize.replicas_section("explore-replicas", result)
    assert "device steps/s" in text and "device / sequential (wall)" in text and "| 24 | 2 |" in text
