"""How `eip-al run` fails and stops (real processes).

The README's main job itself (`eip-al run configs/al-water-demo.yaml`, every generation
through the real Prefect flow, no traceback, and a second run that changes no file) is run
by `.ci/run` exactly as the README writes it, checked with scripts/verify_run.py; it is not
repeated here.

* a labeler whose every job fails ends with ONE error line and exit 1, no traceback;
* SIGINT (and SIGTERM) during a run stops it within seconds, exit 128+signal, and leaves
  no child process (checked with psutil) — the ephemeral Prefect server included.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.prefect]

EIP_AL = [sys.executable, "-m", "eip_al.cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # ephemeral mode
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PYTHONPATH=str(ROOT))
    return env


def _tiny_config(tmp_path: Path, **labeler: object) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "al-water-demo.yaml").read_text())
    cfg.update(name="tiny", generations=1)
    cfg["seed_data"].update(n_frames=12, equilibration_steps=50, stride=5)
    cfg["train"].update(epochs=2)
    for w in cfg["explore"]["walkers"]:
        w.update(steps=800, sample_every=10)  # long enough to be interrupted mid-walker
    # a 2-epoch model breaks the seed-learned O-H limit within a few fs (0.856 < 0.859 Å), and a
    # walker that stops at step 13 is over before the signal test can catch it: floors only
    cfg["explore"].setdefault("collapse", {})["learned_factor"] = None
    cfg["selection"]["n_select"] = 4
    cfg["labeler"].update(labeler)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_failing_labeler_gives_one_error_line_and_no_traceback(tmp_path: Path) -> None:
    cfg = _tiny_config(tmp_path, mock={"failure_rate": 1.0})
    for engine in ("prefect", "none"):
        proc = subprocess.run([*EIP_AL, "run", str(cfg), "--run-dir", str(tmp_path / f"run-{engine}"),
                               "--engine", engine], cwd=ROOT, env=_env(tmp_path), capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr + proc.stdout
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, proc.stderr[-2000:]
        assert "labeling jobs failed" in errors[0] and "failures.csv" in errors[0]
        assert "max_failure_fraction" in errors[0]  # what to change


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_run_and_leaves_no_child(tmp_path: Path, sig: signal.Signals) -> None:
    # a 2-epoch model walks into close contacts whose labels may be quarantined: the rerun
    # below checks resumption, not the failure budget
    cfg = _tiny_config(tmp_path, max_failure_fraction=1.0)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*EIP_AL, "run", str(cfg), "--run-dir", str(run_dir)], cwd=ROOT,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    walker_log = run_dir / "gen-000" / "explore" / "md-300K-0.csv.part"
    deadline = time.time() + 600
    while not walker_log.exists():  # mid-run: the first walker is integrating
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "the walker never started"
        time.sleep(0.5)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the ephemeral Prefect server should be a child"
    t0 = time.time()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert time.time() - t0 < 30
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    time.sleep(0.5)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, alive
    with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as db:
        states = dict(db.execute("SELECT name, state_type FROM flow_run WHERE parent_task_run_id IS NULL"))
    assert list(states.values()) == ["CANCELLED"], states
    # nothing finished was lost: a rerun resumes and completes the generation
    rerun = subprocess.run([*EIP_AL, "run", str(cfg), "--run-dir", str(run_dir), "--engine", "none"],
                           cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]


@pytest.mark.cp2k
def test_crashing_cp2k_executable_gives_one_error_line(tmp_path: Path) -> None:
    """An executable that passes the pre-flight (answers --xml like CP2K) but crashes on every
    job: the labeling budget stops the run with one line naming the class and the file."""
    import shutil

    real = shutil.which("cp2k.psmp")
    if real is None:
        pytest.skip("cp2k.psmp not installed (scripts/setup.sh installs it)")
    fake = tmp_path / "crashing-cp2k"
    fake.write_text(f'#!/bin/bash\nif [ "$1" = "--xml" ]; then exec {real} --xml; fi\n'
                    'echo "segmentation fault (simulated)" >&2\nexit 139\n')
    fake.chmod(0o755)
    cfg = _tiny_config(tmp_path, kind="cp2k", cp2k={"executable": str(fake)})
    proc = subprocess.run([*EIP_AL, "run", str(cfg), "--run-dir", str(tmp_path / "run")], cwd=ROOT,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "crashed" in errors[0] and "failures.csv" in errors[0], proc.stderr[-2000:]
