"""Where labeling jobs run: `local` subprocesses, one Slurm job array, or nowhere (`export`).

Every job (or retry) is a directory with a `run.sh` that runs the code there and writes
`run.status` (exit code, signal, runtime) when it ends or is stopped. The backends only
start those scripts, always as argument lists (`["bash", "run.sh"]`, `["sbatch", ...]`),
never as shell strings:

* `local` runs scripts here in their own process group, with a timeout; a job still
  running from an earlier (killed) eip-al process holds the job's `run.lock` and is
  waited for, not started twice.
* `slurm` writes one array script from `templates/slurm/array.sh`, submits it with
  `sbatch --parsable`, records the array id in `slurm/submissions.json` (so a restarted
  eip-al re-attaches instead of resubmitting) and polls `squeue`, then `sacct`.
* `export` runs nothing; `eip-al ingest` later parses whatever finished.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eip_al.atomic import atomic_write_text
from eip_al.config import ConfigError, SlurmConfig
from eip_al.label.parse import STATUS_NAME, read_status

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SLURM_TEMPLATE = REPO_ROOT / "templates" / "slurm" / "array.sh"
MAX_ARRAY = 1000  # tasks per array (Slurm's default MaxArraySize is 1001)


def script_finished(script: Path) -> bool:
    """True if the script's directory holds a final run.status (not a user interrupt)."""
    status = read_status(script.parent / STATUS_NAME)
    return status is not None and status.signal != "INT"


def _write_status(d: Path, exit_code: int, sig: str, runtime_s: float | None) -> None:
    runtime = "" if runtime_s is None else f"{runtime_s:.3f}"
    atomic_write_text(
        d / STATUS_NAME, f"exit_code={exit_code}\nsignal={sig}\nruntime_s={runtime}\n"
    )


# ------------------------------------------------------------------------- local
class Cancelled(RuntimeError):
    """Local labeling was interrupted; unfinished jobs stay unfinished (rerun continues)."""


_RUNNING: dict[int, subprocess.Popen[bytes]] = {}
_RUNNING_LOCK = threading.Lock()
_CANCEL = threading.Event()


def cancel_local() -> None:
    """Interrupt every script this process runs (SIGINT to each process group)."""
    _CANCEL.set()
    with _RUNNING_LOCK:
        procs = list(_RUNNING.values())
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass


def reset_cancel() -> None:
    """Allow local runs again after `cancel_local` (called when a new labeling starts)."""
    _CANCEL.clear()


BUSY_EXIT = 75  # run.sh's exit code when another copy holds run.lock


def _wait_unlocked(lock: Path) -> None:
    """Block until no other process (e.g. one an earlier, killed eip-al started) holds `lock`."""
    lock.touch()
    with open(lock, "rb") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if _CANCEL.is_set():
                    return
                time.sleep(1.0)
                continue
            fcntl.flock(fh, fcntl.LOCK_UN)
            return


def run_script_local(script: Path, timeout_s: float, grace_s: float = 30.0) -> None:
    """Run one job script here unless it already finished; never raises for a job failure.

    A copy still running from an earlier eip-al process (it holds `run.lock`) is waited
    for, not started twice. On timeout the process group gets SIGTERM (the script records
    signal=TERM and CP2K's partial output stays for the parser), then SIGKILL after
    `grace_s`.
    """
    d = script.parent
    while not script_finished(script):
        _wait_unlocked(d / "run.lock")
        if script_finished(script):
            return
        if _CANCEL.is_set():
            raise Cancelled(f"{d}: labeling was interrupted")
        returncode, killed, runtime = _run_once(script, timeout_s, grace_s)
        if returncode == BUSY_EXIT and read_status(d / STATUS_NAME) is None:
            continue  # another copy took the lock first: wait for it
        if killed or read_status(d / STATUS_NAME) is None:
            _write_status(d, returncode, "KILL" if killed else "", runtime)
        return


def _run_once(script: Path, timeout_s: float, grace_s: float) -> tuple[int, bool, float]:
    d = script.parent
    start = time.perf_counter()
    killed = False
    with open(d / "run.log", "wb") as logf:
        proc = subprocess.Popen(
            ["bash", script.name],
            cwd=d,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with _RUNNING_LOCK:
        _RUNNING[proc.pid] = proc
    try:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s: no result after %.0f s (labeler.cp2k.timeout_s): terminating", d, timeout_s
            )
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                killed = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        with _RUNNING_LOCK:
            _RUNNING.pop(proc.pid, None)
    return proc.returncode, killed, time.perf_counter() - start


def run_scripts_local(scripts: list[Path], timeout_s: float) -> None:
    """Run job scripts one after another (parallelism comes from the caller's threads)."""
    for script in scripts:
        run_script_local(Path(script), timeout_s)


# ------------------------------------------------------------------------- slurm
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
GONE = "GONE"  # neither squeue nor sacct knows the task any more: it ended long ago


class SlurmError(ConfigError):
    """A Slurm command failed (bad partition/account, no scheduler, ...)."""


@dataclass
class TaskState:
    state: str  # Slurm state name, e.g. COMPLETED, RUNNING, TIMEOUT; or GONE
    exit_code: int | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES or self.state == GONE


def render_template(text: str, values: dict[str, str], source: str = "template") -> str:
    """Fill `{{name}}` placeholders; every placeholder must have a value and vice versa."""
    names = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", text))
    missing, unused = names - set(values), set(values) - names
    if missing or unused:
        raise ConfigError(
            f"{source}: placeholders without value {sorted(missing)}, values without placeholder {sorted(unused)}"
        )
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values[m.group(1)], text)


def _sbatch_option(field: str, value: str) -> str:
    if not value or re.search(r"\s", value):
        raise ConfigError(f"labeler.slurm.{field}: must be one word without spaces (got {value!r})")
    return value


def array_script(
    scfg: SlurmConfig,
    *,
    job_name: str,
    task_list: Path,
    n_tasks: int,
    log_dir: Path,
    template: Path = SLURM_TEMPLATE,
) -> str:
    """The job-array script: task i runs the run script on line i+1 of `task_list`."""
    options = []
    if scfg.partition:
        options.append(f"#SBATCH --partition={_sbatch_option('partition', scfg.partition)}")
    if scfg.account:
        options.append(f"#SBATCH --account={_sbatch_option('account', scfg.account)}")
    for i, extra in enumerate(scfg.extra_sbatch):
        if not extra.startswith("--") or "\n" in extra or "\r" in extra:
            raise ConfigError(
                f"labeler.slurm.extra_sbatch[{i}]: must be one '--option[=value]' (got {extra!r})"
            )
        options.append(f"#SBATCH {extra}")
    values = {
        "job_name": _sbatch_option("job name", job_name),
        "array": f"0-{n_tasks - 1}%{scfg.max_array_parallel}",
        "time": _sbatch_option("time", scfg.time),
        "ntasks": str(scfg.ntasks),
        "cpus_per_task": str(scfg.cpus_per_task),
        "output": str(log_dir / "%A_%a.out"),
        "extra_options": "\n".join(options),
        "task_list": shlex.quote(str(task_list)),
    }
    return render_template(template.read_text(), values, str(template))


def sbatch_argv(script: Path) -> list[str]:
    return ["sbatch", "--parsable", str(script)]


def parse_sbatch(stdout: str) -> str:
    """The job id from `sbatch --parsable` output (`123` or `123;cluster`)."""
    first = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = first.split(";")[0].strip()
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed no job id: {stdout.strip()!r}")
    return job_id


def squeue_argv(job_id: str) -> list[str]:
    return ["squeue", "-h", "-r", "-t", "all", "-j", job_id, "-o", "%i|%T"]


def sacct_argv(job_id: str) -> list[str]:
    return ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode"]


def _task_ids(spec: str) -> list[int]:
    """Task ids of `3`, or of a pending record's bracket `[2-9%4]` / `[1,3,5-7]`."""
    spec = spec.strip("[]").split("%")[0]
    ids: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            ids.extend(range(int(lo), int(hi or lo) + 1))
    return ids


def _parse_rows(text: str, job_id: str, with_exit: bool) -> dict[int, TaskState]:
    states: dict[int, TaskState] = {}
    for line in text.splitlines():
        cols = line.strip().split("|")
        if len(cols) < 2:
            continue
        ident, state = cols[0], cols[1].split()[0] if cols[1].split() else ""
        m = re.fullmatch(rf"{job_id}_(\d+|\[[0-9,\-%]+\])", ident)
        if m is None or not state:
            continue  # job steps (123_0.batch), other jobs, headers
        exit_code = None
        if with_exit and len(cols) > 2 and ":" in cols[2]:
            code, _, sig = cols[2].partition(":")
            exit_code = int(code) if code.isdigit() else None
            if sig.isdigit() and int(sig):
                exit_code = 128 + int(sig)
        for task in _task_ids(m.group(1)):
            states[task] = TaskState(state, exit_code)
    return states


def parse_squeue(text: str, job_id: str) -> dict[int, TaskState]:
    """Task states from `squeue -h -r -o %i|%T` (pending ranges like `12_[2-9%4]` expanded)."""
    return _parse_rows(text, job_id, with_exit=False)


def parse_sacct(text: str, job_id: str) -> dict[int, TaskState]:
    """Task states and exit codes from `sacct -n -P -X -o JobID,State,ExitCode`."""
    return _parse_rows(text, job_id, with_exit=True)


Runner = Callable[[list[str], Path], subprocess.CompletedProcess[str]]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SlurmError(f"'{argv[0]}' not found: is this a Slurm login node?") from None


class SlurmBackend:
    """Runs job scripts as Slurm job arrays; survives a restart of the submitting process."""

    def __init__(
        self,
        work_dir: Path,
        scfg: SlurmConfig,
        *,
        job_name: str = "eip-label",
        runner: Runner = _run,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.dir = self.work_dir / "slurm"
        self.scfg = scfg
        self.job_name = job_name
        self.runner = runner
        self.sleep = sleep
        self.state_file = self.dir / "submissions.json"

    # -- state --------------------------------------------------------------------
    def submissions(self) -> list[dict[str, str | int | float]]:
        if not self.state_file.exists():
            return []
        return json.loads(self.state_file.read_text())["submissions"]

    def _scripts_of(self, sub: dict[str, str | int | float]) -> list[Path]:
        return [
            Path(p) for p in (self.work_dir / str(sub["task_list"])).read_text().split("\n") if p
        ]

    # -- commands -----------------------------------------------------------------
    def submit(self, scripts: list[Path]) -> dict[str, str | int | float]:
        """Submit one array over `scripts`; the submission is recorded before returning."""
        subs = self.submissions()
        n = len(subs)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        task_list = self.dir / f"tasks-{n:03d}.txt"
        atomic_write_text(task_list, "".join(f"{Path(s).resolve()}\n" for s in scripts))
        script = self.dir / f"array-{n:03d}.sh"
        atomic_write_text(
            script,
            array_script(
                self.scfg,
                job_name=self.job_name,
                task_list=task_list.resolve(),
                n_tasks=len(scripts),
                log_dir=(self.dir / "logs").resolve(),
            ),
        )
        res = self.runner(sbatch_argv(script), self.dir)
        if res.returncode != 0:
            raise SlurmError(f"sbatch {script} failed ({res.returncode}): {res.stderr.strip()}")
        job_id = parse_sbatch(res.stdout)
        sub: dict[str, str | int | float] = {
            "job_id": job_id,
            "task_list": task_list.relative_to(self.work_dir).as_posix(),
            "n_tasks": len(scripts),
            "submitted_at": time.time(),
        }
        atomic_write_text(
            self.state_file, json.dumps({"submissions": [*subs, sub]}, indent=1) + "\n"
        )
        log.info("submitted Slurm array %s (%d tasks)", job_id, len(scripts))
        return sub

    def states(self, job_id: str, n_tasks: int) -> dict[int, TaskState]:
        """State of every task: squeue first, sacct for tasks squeue no longer shows."""
        res = self.runner(squeue_argv(job_id), self.dir)
        states = parse_squeue(res.stdout, job_id) if res.returncode == 0 else {}
        if len(states) < n_tasks:
            acct = self.runner(sacct_argv(job_id), self.dir)
            if acct.returncode == 0:
                for task, st in parse_sacct(acct.stdout, job_id).items():
                    states.setdefault(task, st)
        for task in range(n_tasks):
            states.setdefault(task, TaskState(GONE))
        return states

    def wait(
        self, sub: dict[str, str | int | float], progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Poll until every task of `sub` ended; then give status-less tasks a run.status.

        A task killed before its script could write run.status (SIGKILL, node failure) gets
        one from the scheduler's state, unless its script was rewritten after submission.
        """
        job_id, n = str(sub["job_id"]), int(sub["n_tasks"])
        scripts = self._scripts_of(sub)
        while True:
            states = self.states(job_id, n)
            done = sum(st.terminal for st in states.values())
            if progress is not None:
                progress(done, n)
            if done == n:
                break
            self.sleep(self.scfg.poll_interval_s)
        for task, script in enumerate(scripts):
            st = states[task]
            rewritten = script.exists() and script.stat().st_mtime > float(sub["submitted_at"])
            status = read_status(script.parent / STATUS_NAME)
            if status is not None and status.signal == "TERM" and st.state == "CANCELLED" and not rewritten:
                # scancel sends the TERM a time limit sends; the scheduler knows which it was
                _write_status(script.parent, status.exit_code, "CANCELLED", status.runtime_s)
            elif status is None and not rewritten:
                sig = (
                    "TERM"
                    if st.state in ("TIMEOUT", "DEADLINE")
                    else (st.state if st.state != "COMPLETED" else "")
                )
                code = (
                    st.exit_code
                    if st.exit_code is not None
                    else (0 if st.state == "COMPLETED" else 1)
                )
                _write_status(script.parent, code, sig, None)

    def run(self, scripts: list[Path], progress: Callable[[int, int], None] | None = None) -> None:
        """Run every unfinished script: re-attach to earlier arrays, submit the rest, wait."""
        pending = {Path(s).resolve() for s in scripts if not script_finished(Path(s))}
        for sub in self.submissions():
            if pending & {p.resolve() for p in self._scripts_of(sub)}:
                log.info("re-attaching to Slurm array %s", sub["job_id"])
                self.wait(sub, progress)
        todo = [
            Path(s)
            for s in scripts
            if Path(s).resolve() in pending and not script_finished(Path(s))
        ]
        for i in range(0, len(todo), MAX_ARRAY):
            self.wait(self.submit(todo[i : i + MAX_ARRAY]), progress)
