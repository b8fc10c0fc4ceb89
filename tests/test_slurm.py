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
    """Skip (or, with EIP_REQUIRE_SLURM=1, fail) because `reason` keeps the test from running."""
    if os.environ.get("EIP_REQUIRE_SLURM") == "1":
        pytest.fail(f"EIP_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


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
        _unavailable("local Slurm cannot start: needs root to run slurmd (run the tests as root, as CI does)")
    missing = [e for e in ("munged", "slurmctld", "slurmd", "sbatch", "squeue") if shutil.which(e) is None]
    if missing:
        _unavailable(f"local Slurm cannot start: {', '.join(missing)} not installed "
                     "(apt-get install -y --no-install-recommends slurm-wlm munge)")
    state = Path(tempfile.mkdtemp(prefix="eipslurm-", dir="/tmp"))
    env = dict(os.environ, EIP_SLURM_CTLD_PORT=str(_free_port()), EIP_SLURM_D_PORT=str(_free_port()))
    res = subprocess.run(["bash", str(START), str(state)], env=env, capture_output=True,
                         text=True, timeout=180)
    cluster = LocalSlurm(state)
    try:
        if res.returncode != 0:
            _unavailable(f"local Slurm cannot start: {START.name} exited {res.returncode}: {res.stderr.strip()[-2000:]}")
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


# ----------------------------------------------------------------------------- labeling
def _water_frames(n: int) -> list:
    """`n` single H2O molecules (slightly distorted, seeded) in 6 Å periodic boxes."""
    import numpy as np
    from ase import Atoms

    rng = np.random.default_rng(12)
    base = np.array([[3.0, 3.0, 3.0], [3.96, 3.0, 3.0], [2.76, 3.93, 3.0]])
    return [Atoms("OHH", positions=base + rng.normal(0.0, 0.04, (3, 3)), cell=[6.0, 6.0, 6.0], pbc=True)
            for _ in range(n)]


TINY_CP2K = {"cutoff_ry": 150.0, "rel_cutoff_ry": 30.0, "eps_scf": 1e-5, "retry_scf": False}


@pytest.mark.cp2k
def test_cp2k_labels_through_slurm_array_with_cancelled_tasks(local_slurm: LocalSlurm, tmp_path: Path) -> None:
    """`eip-al label IN OUT --backend slurm`: one sbatch array of tiny CP2K jobs.

    Task 3 is cancelled while pending (Slurm drops it from the array record) and the
    task running after task 0 is cancelled mid-run (CANCELLED); the two others label. The
    result names both failures with a class, the good labels equal the local backend's,
    `eip-al ingest` and a rerun change nothing and submit nothing new.
    """
    import json
    import sys

    import numpy as np
    import yaml

    from eip_al.config import LabelerConfig
    from eip_al.io import read_frames, write_frames
    from eip_al.label import label_file
    from eip_al.schemas import LabelingResult

    if shutil.which("cp2k.psmp") is None:
        _unavailable("cp2k.psmp not installed (scripts/setup.sh installs Debian's cp2k)")
    frames = _water_frames(4)
    src, out = tmp_path / "frames.extxyz", tmp_path / "labeled.extxyz"
    write_frames(src, frames)
    work = tmp_path / "work"
    labeler = {
        "kind": "cp2k", "backend": "local", "max_failure_fraction": 0.5, "cp2k": TINY_CP2K,
        "slurm": {"time": "00:10:00", "poll_interval_s": 0.5, "max_array_parallel": 1},
    }
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump({"labeler": labeler}))
    log = open(tmp_path / "eip-al-label.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "eip_al.cli", "label", str(src), str(out), "--config", str(cfg_path),
         "--backend", "slurm", "--work-dir", str(work)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, COLUMNS="200"),
    )
    subs = work / "slurm" / "submissions.json"

    def detail() -> str:
        job = json.loads(subs.read_text())["submissions"][0]["job_id"] if subs.exists() else None
        return (f"eip-al label: {(tmp_path / 'eip-al-label.log').read_text()[-3000:]}\n"
                f"states {job and local_slurm.array_states(job)}\n{local_slurm.log_tail()}")

    try:
        wait_for(lambda: subs.exists() or proc.poll() is not None, 120, "the array submission", detail)
        assert proc.poll() is None, detail()
        job_id = str(json.loads(subs.read_text())["submissions"][0]["job_id"])
        # %1: one task at a time, so task 3 is certainly still pending here.
        local_slurm.cmd("scancel", f"{job_id}_3")
        # Cancel the first of tasks 1, 2 that we catch running with CP2K started.
        cancelled: dict[str, int] = {}

        def cancel_running() -> bool:
            states = local_slurm.array_states(job_id)
            for task in (1, 2):
                out_log = work / "jobs" / f"{task:06d}" / "output.log"
                if states.get(task) == "RUNNING" and out_log.exists():
                    if local_slurm.cmd("scancel", f"{job_id}_{task}", check=False).returncode == 0:
                        cancelled["task"] = task
                        return True
            return all(states.get(t) in TERMINAL for t in (1, 2))  # missed both: fails below

        wait_for(cancel_running, 300, "task 1 or 2 to run", detail)
        assert "task" in cancelled, f"tasks 1 and 2 finished before one could be cancelled: {detail()}"
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, detail()
    res = LabelingResult.load(work / "artifact.json")

    states = local_slurm.array_states(job_id)
    assert states.get(cancelled["task"]) == "CANCELLED", states
    assert 3 not in states, states  # a pending task cancelled out of the array leaves no record
    by_job = {o.job_id: o for o in res.outcomes}
    bad = {f"{cancelled['task']:06d}", "000003"}
    good = {"000000", "000001", "000002"} - bad
    assert {j for j, o in by_job.items() if o.status == "ok"} == good, res.outcomes
    assert (res.n_ok, res.n_failed) == (2, 2) and not res.budget_exceeded
    # Both are "crashed", not "walltime": the scancel'd running task trapped a TERM like at a
    # time limit, but Slurm says CANCELLED; the one dropped while pending is GONE.
    for j in bad:
        assert by_job[j].status == "failed" and by_job[j].failure_class == "crashed", by_job[j]
    assert "CANCELLED" in by_job[f"{cancelled['task']:06d}"].message, by_job
    assert sum(res.failures_by_class.values()) == 2
    failures = (tmp_path / "labeled.failures.csv").read_text().splitlines()
    assert sorted(line.split(",")[0] for line in failures[1:]) == sorted(bad)

    # The labels: finite, sane, and exactly what the local backend gives for the same frame.
    labeled = {a.info["job_id"]: a for a in read_frames(out, require_labels=True)}
    assert sorted(labeled) == sorted(good)
    for a in labeled.values():
        assert a.get_forces().shape == (3, 3) and np.all(np.isfinite(a.get_forces()))
        assert -600.0 < a.get_potential_energy() < -300.0  # one PBE water molecule: about -470 eV
    lab_cfg = LabelerConfig.model_validate(labeler)
    write_frames(tmp_path / "frame0.extxyz", frames[:1])
    local = label_file(tmp_path / "frame0.extxyz", tmp_path / "local.extxyz", lab_cfg)
    assert local.n_ok == 1, local.outcomes
    ref = read_frames(tmp_path / "local.extxyz", require_labels=True)[0]
    assert labeled["000000"].get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-6)
    np.testing.assert_allclose(labeled["000000"].get_forces(), ref.get_forces(), atol=1e-6)

    # `eip-al ingest` and a rerun through the API: nothing resubmitted, nothing changed.
    n_subs = len(json.loads(subs.read_text())["submissions"])
    ing = subprocess.run([sys.executable, "-m", "eip_al.cli", "ingest", str(work)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert ing.returncode == 0, ing.stdout + ing.stderr
    again = LabelingResult.load(work / "artifact.json")
    assert [o.model_dump() for o in again.outcomes] == [o.model_dump() for o in res.outcomes]
    rerun = label_file(src, out, lab_cfg.model_copy(update={"backend": "slurm"}), work_dir=work)
    assert [o.model_dump() for o in rerun.outcomes] == [o.model_dump() for o in res.outcomes]
    assert len(json.loads(subs.read_text())["submissions"]) == n_subs


def test_mock_labels_through_slurm_equal_in_process_labels(local_slurm: LocalSlurm, tmp_path: Path) -> None:
    """The mock labeler runs as a Slurm array too (a cluster rehearsal without DFT): same
    labels, noise and injected failures as in-process, and a rerun submits nothing."""
    import json

    import numpy as np

    from eip_al.config import LabelerConfig
    from eip_al.io import read_frames, write_frames
    from eip_al.label import label_file

    write_frames(tmp_path / "in.extxyz", _water_frames(5))
    mock = {"force_noise_eV_A": 0.1, "failure_rate": 0.25, "seed": 2}
    base = {"kind": "mock", "max_failure_fraction": 1.0, "mock": mock}
    local = label_file(tmp_path / "in.extxyz", tmp_path / "local.extxyz", LabelerConfig.model_validate(base))
    slurm_cfg = LabelerConfig.model_validate(
        {**base, "backend": "slurm", "slurm": {"time": "00:05:00", "poll_interval_s": 0.5}})
    res = label_file(tmp_path / "in.extxyz", tmp_path / "slurm.extxyz", slurm_cfg, tmp_path / "work")
    assert [(o.status, o.failure_class) for o in res.outcomes] == [
        (o.status, o.failure_class) for o in local.outcomes], res.outcomes
    assert res.n_ok == local.n_ok > 0
    ref = {a.info["job_id"]: a for a in read_frames(tmp_path / "local.extxyz")}
    got = {a.info["job_id"]: a for a in read_frames(tmp_path / "slurm.extxyz")}
    assert sorted(got) == sorted(ref)
    for job_id, a in ref.items():
        np.testing.assert_allclose(got[job_id].get_forces(), a.get_forces(), atol=1e-12)
    subs = tmp_path / "work" / "slurm" / "submissions.json"
    assert len(json.loads(subs.read_text())["submissions"]) == 1
    label_file(tmp_path / "in.extxyz", tmp_path / "slurm.extxyz", slurm_cfg, tmp_path / "work")
    assert len(json.loads(subs.read_text())["submissions"]) == 1  # nothing resubmitted


def test_array_script_paths_with_spaces_and_quotes(local_slurm: LocalSlurm, tmp_path: Path) -> None:
    """The shell-quoted `#SBATCH --output=` of a work dir with a space and a quote is read by
    sbatch as one path: every task's log lands in slurm/logs/ there."""
    from eip_al.config import SlurmConfig
    from eip_al.label.backends.slurm import SlurmArray

    work = tmp_path / "my run's dir"
    scripts = []
    for i in range(2):
        d = work / f"job {i}"
        d.mkdir(parents=True)
        (d / "run.sh").write_text(
            '#!/bin/bash\ncd "$(dirname "$0")"\necho "ran in $PWD"\n'
            'printf "exit_code=0\\nsignal=\\nruntime_s=0\\n" > run.status\n'
        )
        scripts.append(d / "run.sh")
    backend = SlurmArray(work, SlurmConfig(poll_interval_s=0.5))
    backend.run(scripts)
    logs = sorted((work / "slurm" / "logs").glob("*.out"))
    assert [p.read_text().strip() for p in logs] == [f"ran in {work / f'job {i}'}" for i in range(2)], local_slurm.log_tail()
