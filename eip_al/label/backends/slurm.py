"""`labeler.backend: slurm`: a batch's jobs run as one Slurm job array.

The array script comes from `templates/slurm/array.sh`, is submitted with
`sbatch --parsable`, and its id is recorded in `slurm/submissions.json`, so a restarted
eip-al re-attaches instead of resubmitting; the tasks are polled with `squeue`, then
`sacct`. SCF retries go out as a second array once the first has ended.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from eip_al.atomic import atomic_write_text
from eip_al.config import ConfigError, LabelerConfig, SlurmConfig, check_safe_path
from eip_al.label.backends import Backend, BatchView, LabelOne, RetryOne, Runner, batch_name
from eip_al.label.backends.script import script_finished, write_status
from eip_al.label.base import packaged_template
from eip_al.label.parse import STATUS_NAME, read_status
from eip_al.progress import Throttle, bar, say

log = logging.getLogger(__name__)

SLURM_TEMPLATE = packaged_template("slurm", "array.sh")
MAX_ARRAY = 1000  # tasks per array (Slurm's default MaxArraySize is 1001)


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
    """The job-array script: task i runs the run script on line i+1 of `task_list`.

    Paths are shell-quoted (sbatch reads `#SBATCH` lines with the same quoting rules); a
    path with a newline or other control character is refused (ConfigError).
    """
    for what, path in (("task list", task_list), ("Slurm log directory", log_dir)):
        check_safe_path(path, what)
    options = []
    if scfg.partition:
        options.append(f"#SBATCH --partition={_sbatch_option('partition', scfg.partition)}")
    if scfg.account:
        options.append(f"#SBATCH --account={_sbatch_option('account', scfg.account)}")
    for i, extra in enumerate(scfg.extra_sbatch):  # control characters: refused by SlurmConfig
        if not extra.startswith("--"):
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
        "output": shlex.quote(str(log_dir / "%A_%a.out")),
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


CommandRunner = Callable[[list[str], Path], subprocess.CompletedProcess[str]]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SlurmError(f"'{argv[0]}' not found: is this a Slurm login node?") from None


class SlurmArray:
    """Runs job scripts as Slurm job arrays; survives a restart of the submitting process."""

    def __init__(
        self,
        work_dir: Path,
        scfg: SlurmConfig,
        *,
        job_name: str = "eip-label",
        runner: CommandRunner = _run,
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
                write_status(script.parent, status.exit_code, "CANCELLED", status.runtime_s)
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
                write_status(script.parent, code, sig, None)

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


class SlurmBackend(Backend):
    """Submits a batch's job scripts as Slurm arrays from this (login) node and waits."""

    name = "slurm"

    def problems(self, cfg: LabelerConfig) -> list[str]:
        return [f"labeler.backend slurm: '{exe}' not found on PATH" for exe in ("sbatch", "squeue")
                if shutil.which(exe) is None]

    def describe(self, cfg: LabelerConfig) -> str:
        return f"slurm (partition {cfg.slurm.partition or 'default'})"

    def _array(self, batch: BatchView) -> SlurmArray:
        return SlurmArray(batch.label_dir, batch.cfg.slurm, job_name=f"eip-label-{batch.generation}")

    def runner(self, batch: BatchView) -> Runner:
        array = self._array(batch)
        return lambda dirs: array.run([batch.labeler.run_script(d) for d in dirs])

    def run_all(self, batch: BatchView, todo: Sequence[Path], label: LabelOne, retry: RetryOne) -> None:
        """One array for the jobs, one more for the retries they need; then record outcomes."""
        array, labeler = self._array(batch), batch.labeler
        with bar(True) as progress:
            task = progress.add_task("Slurm tasks done", total=len(todo))
            throttle = Throttle()

            def show(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)
                if throttle.due() or done == total:
                    say("label", f"{batch_name(batch)}: Slurm {done}/{total} tasks ended")

            array.run([labeler.run_script(d) for d in todo], show)
            retry_dirs = [d for d in todo if retry(d)]
            if retry_dirs:
                progress.update(task, description="Slurm retries done", completed=0, total=len(retry_dirs))
                array.run([labeler.run_script(d) for d in retry_dirs], show)
        for d in todo:
            label(d, None)
