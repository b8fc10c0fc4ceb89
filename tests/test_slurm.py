"""The `slurm` labeling backend against a real single-node Slurm on localhost.

The `local_slurm` fixture starts munged + slurmctld + slurmd with
scripts/slurm/start-local-slurm.sh (own state dir, own munge key, free ports) and points
every Slurm client of this process at it through SLURM_CONF. It skips, with the reason,
only where the cluster cannot start (not root, Slurm not installed, daemons fail); set
EIP_REQUIRE_SLURM=1 (CI) to make those a failure instead.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "scripts" / "slurm" / "start-local-slurm.sh"
STOP = ROOT / "scripts" / "slurm" / "stop-local-slurm.sh"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}

pytestmark = pytest.mark.slurm


def _unavailable(reason: str) -> None:
    if os.environ.get("EIP_REQUIRE_SLURM") == "1":
        pytest.fail(f"EIP_REQUIRE_SLURM=1 but local Slurm cannot start: {reason}")
    pytest.skip(f"local Slurm cannot start: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """Handle on the running test cluster."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.conf = state_dir / "slurm.conf"

    def cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (argument list) against this cluster."""
        env = dict(os.environ, SLURM_CONF=str(self.conf))
        res = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def array_states(self, job_id: str) -> dict[int, str]:
        """State of each known task of array job `job_id` (squeue keeps finished ones for MinJobAge)."""
        out = self.cmd("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i|%T").stdout
        states: dict[int, str] = {}
        for line in out.split():
            ident, state = line.split("|")
            m = re.fullmatch(r"\d+_(\d+)", ident)
            if m:
                states[int(m.group(1))] = state
                continue
            m = re.fullmatch(r"\d+_\[([0-9,\-%]+)\]", ident)  # pending meta record, e.g. 4_[2-3%2]
            if m:
                for part in m.group(1).split("%")[0].split(","):
                    lo, _, hi = part.partition("-")
                    for i in range(int(lo), int(hi or lo) + 1):
                        states[i] = state
        return states

    def log_tail(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            p = self.state_dir / name
            if p.exists():
                parts.append(f"--- {name}\n" + "\n".join(p.read_text().splitlines()[-15:]))
        return "\n".join(parts)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str]) -> None:
    """Poll `predicate` every 0.5 s; a TimeoutError names what was awaited (not a timing test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}\n{detail()}")


@pytest.fixture(scope="module")
def local_slurm() -> Iterator[LocalSlurm]:
    if os.geteuid() != 0:
        _unavailable("needs root to run slurmd (run the tests as root, as CI does)")
    missing = [e for e in ("munged", "slurmctld", "slurmd", "sbatch", "squeue") if shutil.which(e) is None]
    if missing:
        _unavailable(f"{', '.join(missing)} not installed "
                     "(apt-get install -y --no-install-recommends slurm-wlm munge)")
    state = Path(tempfile.mkdtemp(prefix="eipslurm-", dir="/tmp"))
    env = dict(os.environ, EIP_SLURM_CTLD_PORT=str(_free_port()), EIP_SLURM_D_PORT=str(_free_port()))
    res = subprocess.run(["bash", str(START), str(state)], env=env, capture_output=True,
                         text=True, timeout=180)
    cluster = LocalSlurm(state)
    try:
        if res.returncode != 0:
            _unavailable(f"{START.name} exited {res.returncode}: {res.stderr.strip()[-2000:]}")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SLURM_CONF", str(cluster.conf))  # for code under test that calls sbatch
            yield cluster
    finally:
        subprocess.run(["bash", str(STOP), str(state)], capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


ARRAY_SCRIPT = """#!/bin/bash
# Task 0, 1: succeed; task 2: block until cancelled; task 3: fail with exit code 3.
set -eu
case "$SLURM_ARRAY_TASK_ID" in
  2) touch started.2; sleep 600;;
  3) echo "task 3 fails on purpose" >&2; exit 3;;
  *) echo "$SLURM_ARRAY_TASK_ID $(hostname -s)" > done.$SLURM_ARRAY_TASK_ID;;
esac
"""


def test_job_array_completes_fails_and_cancels(local_slurm: LocalSlurm, tmp_path: Path) -> None:
    """sbatch --array: completed, failed (exit 3) and cancelled elements are told apart."""
    script = tmp_path / "array.sh"
    script.write_text(ARRAY_SCRIPT)
    out = local_slurm.cmd(
        "sbatch", "--parsable", "--array=0-3", f"--chdir={tmp_path}",
        f"--output={tmp_path}/slurm-%A_%a.out", "--job-name=eip-smoke", str(script),
    ).stdout.strip()
    job_id = out.split(";")[0]
    assert job_id.isdigit(), out

    def detail() -> str:
        return f"states {local_slurm.array_states(job_id)}\n{local_slurm.log_tail()}"

    wait_for(lambda: local_slurm.array_states(job_id).get(2) == "RUNNING"
             and (tmp_path / "started.2").exists(), 120, "array task 2 to run", detail)
    local_slurm.cmd("scancel", f"{job_id}_2")
    wait_for(lambda: len(local_slurm.array_states(job_id)) == 4
             and set(local_slurm.array_states(job_id).values()) <= TERMINAL,
             180, "all 4 array tasks to finish", detail)

    states = local_slurm.array_states(job_id)
    assert states == {0: "COMPLETED", 1: "COMPLETED", 2: "CANCELLED", 3: "FAILED"}, detail()
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    for i in (0, 1):
        assert (tmp_path / f"done.{i}").read_text().split() == [str(i), host]
    assert "fails on purpose" in (tmp_path / f"slurm-{job_id}_3.out").read_text()
    assert not (tmp_path / "done.2").exists() and not (tmp_path / "done.3").exists()

    # Exit code of the failed element, as a poller would read it from the controller.
    show = local_slurm.cmd("scontrol", "-o", "show", "job", f"{job_id}_3").stdout
    assert "JobState=FAILED" in show and "ExitCode=3:0" in show, show
    # Without slurmdbd, finished jobs are in the jobcomp file (`sacct -c`), not in `sacct`.
    comp = (local_slurm.state_dir / "jobcomp.txt").read_text()
    recs = [r for r in comp.splitlines() if f"ArrayJobId={job_id} " in r]
    by_task = {int(re.search(r"ArrayTaskId=(\d+)", r).group(1)): re.search(r"JobState=(\w+)", r).group(1)
               for r in recs}
    assert by_task == {0: "COMPLETED", 1: "COMPLETED", 2: "CANCELLED", 3: "FAILED"}, comp
