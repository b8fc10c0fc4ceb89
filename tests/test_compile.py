"""explore.compile (eip_al/model/painn.py `compile_backbones`): the compiled backbone gives the
eager model's energies, forces, σ and UDD bias forces, on frames of different sizes (one
dynamic-shape graph), and a compiled walker logs the eager walker's trajectory."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eip_al.calculator import EIPCalculator
from eip_al.config import UDDConfig
from eip_al.explore import run_walkers, walker_names
from eip_al.explore.udd import make_bias
from tests.test_explore import make_run, tiny_model, water_box
from tests.test_explore_batch import frames
from tests.test_explore_device import config

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="torch.compile (inductor) needs a C compiler")


def test_compiled_model_matches_eager() -> None:
    eager = EIPCalculator.from_model(tiny_model(), bias=make_bias(UDDConfig(A=20.0, B=1.0)))
    compiled = EIPCalculator.from_model(tiny_model(), bias=make_bias(UDDConfig(A=20.0, B=1.0)), compile=True)
    for atoms in (water_box(seed=0), water_box(n_side=3, box=9.3, seed=1), water_box(seed=2)):  # 24, 81, 24 atoms
        for calc in (eager, compiled):
            calc.calculate(atoms.copy(), ["energy", "forces"])
        a, b = eager.results, compiled.results
        assert b["energy"] == pytest.approx(a["energy"], rel=1e-12)
        for key in ("forces", "forces_bias", "uncertainty"):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-9, atol=1e-11)
    assert compiled.model.backbone.compiled and not eager.model.backbone.compiled


def test_compiled_model_runs_in_worker_threads() -> None:
    """Walkers run in Prefect's worker threads, where torch's donated-buffer setting (thread-
    local) is at its default: the first pass compiles there and the UDD pass (two backward
    passes over one graph) still works, in a second thread too."""
    compiled = EIPCalculator.from_model(tiny_model(), bias=make_bias(UDDConfig(A=20.0, B=1.0)), compile=True)
    eager = EIPCalculator.from_model(tiny_model(), bias=make_bias(UDDConfig(A=20.0, B=1.0)))
    eager.calculate(water_box(seed=0), ["energy", "forces"])
    for _ in range(2):
        box: list = []
        worker = threading.Thread(target=lambda box=box: box.append(compiled.get_forces(water_box(seed=0))))
        worker.start()
        worker.join()
        assert box, "the compiled pass failed in the worker thread"
        np.testing.assert_allclose(box[0], eager.results["forces"], rtol=1e-9, atol=1e-11)


def test_compiled_walkers_follow_the_eager_trajectories(tmp_path: Path) -> None:
    eager_run = make_run(tmp_path / "eager", frames())
    cfg = config("device", steps=12)
    ref = run_walkers(cfg, eager_run, 0, walker_names(cfg))
    comp_run = make_run(tmp_path / "comp", frames())
    cfg_c = cfg.model_copy(update={"explore": cfg.explore.model_copy(update={"compile": True})})
    out = run_walkers(cfg_c, comp_run, 0, walker_names(cfg_c))
    for x, y in zip(ref, out, strict=True):
        assert (x.steps_run, x.collapse_reason) == (y.steps_run, y.collapse_reason)
        la, lb = pd.read_csv(eager_run.abs(x.log_csv)), pd.read_csv(comp_run.abs(y.log_csv))
        np.testing.assert_allclose(lb.to_numpy(), la.to_numpy(), rtol=1e-8, atol=1e-10)
