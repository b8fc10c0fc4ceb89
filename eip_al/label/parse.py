"""Reading CP2K outputs and classifying each job: a label, or one failure class.

Units: CP2K prints the total energy in Hartree and forces in Hartree/Bohr; labels are
converted to eV and eV/Å with ``ase.units.Hartree`` and ``ase.units.Bohr`` (ASE's
default constants, CODATA 2014), the same constants every other ASE-based label in a
dataset uses.

Both output layouts in use are read: CP2K ≤ 2024 (``ENERGY| ... energy [a.u.]:`` and an
``ATOMIC FORCES in [a.u.]`` table) and CP2K ≥ 2025 (``energy [hartree]`` and
``FORCES| Atomic forces [hartree/bohr]`` rows). A job counts as successful only with
normal termination, a converged SCF (CP2K 2023 warns ``SCF run NOT converged`` and still
prints energy and forces; newer versions abort — both are rejected), exactly one energy,
one force row per atom with the input's elements, and printed coordinates that match the
input frame (up to lattice translations).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree

from eip_al.label.base import JobResult

HARTREE_EV = Hartree  # eV per Hartree (ase.units, CODATA 2014)
FORCE_AU_EV_A = Hartree / Bohr  # eV/Å per Hartree/Bohr

OUTPUT_NAME = "output.log"
STATUS_NAME = "run.status"
STDERR_NAME = "stderr.log"
POSITION_TOLERANCE_A = 1e-4  # CP2K prints coordinates with 6 decimals

_ENERGY = re.compile(
    r"ENERGY\|\s+Total FORCE_EVAL \(\s*\w+\s*\) energy\s+(?:\[a\.u\.\]|\(a\.u\.\)|\[hartree\]):?\s+(\S+)"
)
_COORDS = re.compile(r"ATOMIC COORDINATES IN\s+angstrom", re.IGNORECASE)
_VERSION = re.compile(r"CP2K\|\s+version string:\s+(.+?)\s*$", re.MULTILINE)
_SCF_NOT_CONVERGED = "SCF run NOT converged"
_NORMAL_END = "PROGRAM ENDED AT"
_WALLTIME_MSG = "exceeded requested execution time"
# run.status `signal` values that mean a time limit stopped the run
WALLTIME_SIGNALS = frozenset({"TERM", "KILL", "TIMEOUT"})


@dataclass
class CP2KOutput:
    """What one CP2K output text says (raw CP2K units; None where it says nothing).

    `unreadable` lists what is there but cannot be read as one clean value or table: an
    overflowed (``****``) or garbled number, a table with a duplicated or missing row, a
    force table printed more than once. Any entry makes the job ``inconsistent``.
    """

    version: str | None
    normal_end: bool
    abort_message: str | None
    scf_not_converged: bool
    walltime_exceeded: bool
    energies_ha: list[float]
    force_symbols: list[str] | None
    forces_au: np.ndarray | None  # (N, 3) Hartree/Bohr
    coord_symbols: list[str] | None
    coords_A: np.ndarray | None  # (N, 3) Å
    unreadable: list[str] = field(default_factory=list)


@dataclass
class RunStatus:
    """What a finished (or terminated) run script recorded in ``run.status``."""

    exit_code: int
    signal: str
    runtime_s: float | None


class _Unreadable(ValueError):
    """A value or table that is present but cannot be read (the message says what)."""


def _abort_message(text: str) -> str | None:
    """The text inside CP2K's ``[ABORT]`` box, joined into one line (None if no abort)."""
    at = text.find("[ABORT]")
    if at < 0:
        return None
    lines = text[at:].splitlines()[1:12]
    words: list[str] = []
    for line in lines:
        if line.strip().startswith("****"):
            break
        body = line.strip().strip("*")
        # drop the ASCII art at the left of the box
        body = re.sub(r"^\s*(?:\\___/|\|\s|O/\||/\|\s\||/\s\\)", "", body).strip()
        if body:
            words.append(body)
    return " ".join(words) or "CP2K aborted"


def _rows(segment: str, skip: tuple[str, ...] = ("#", "Atom")) -> list[list[str]]:
    return [
        parts
        for parts in (ln.split() for ln in segment.splitlines())
        if parts and parts[0] not in skip
    ]


def _next_line(text: str, at: int) -> int:
    """Index of the line break after `at` (the end of the text if there is none)."""
    end = text.find("\n", at)
    return len(text) if end < 0 else end


def _table(
    rows: list[list[str]], width: int, sym: int | None, xyz: int, what: str
) -> tuple[list[str] | None, np.ndarray]:
    """Symbols (column `sym`) and an (N, 3) float array (columns xyz..xyz+2) of a table whose
    first column numbers the atoms 1..N; raises _Unreadable naming `what` otherwise."""
    if not rows:
        raise _Unreadable(f"the {what} has no rows")
    for i, r in enumerate(rows, start=1):
        if len(r) < width or r[0] != str(i):
            raise _Unreadable(
                f"the {what} is garbled at row {i} ({' '.join(r)[:60]!r}): "
                "expected atoms numbered 1..N, one row each"
            )
    try:
        values = np.array([r[xyz : xyz + 3] for r in rows], dtype=float)
    except ValueError:
        bad = next(v for r in rows for v in r[xyz : xyz + 3] if not _is_float(v))
        raise _Unreadable(f"the {what} holds an unreadable number {bad[:30]!r} (overflowed or garbled)") from None
    return ([r[sym] for r in rows] if sym is not None else None), values


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


_FORCE_LAYOUTS = (  # header, end marker, row prefix to drop, row width, symbol column, x column
    ("ATOMIC FORCES in [a.u.]", "SUM OF ATOMIC FORCES", "", 6, 2, 3),
    ("FORCES| Atomic forces [hartree/bohr]", "FORCES| Sum", "FORCES|", 4, None, 1),
)


def _force_table(text: str) -> tuple[list[str] | None, np.ndarray] | None:
    """The force table, in either layout (None if absent or cut off); raises _Unreadable for
    a garbled table or more than one (a single point prints exactly one)."""
    for header, end_marker, prefix, width, sym, xyz in _FORCE_LAYOUTS:
        at = text.find(header)
        if at < 0:
            continue
        n_tables = text.count(header)
        if n_tables > 1:
            raise _Unreadable(f"{n_tables} force tables in the output (a single point prints one)")
        end = text.find(end_marker, at)
        if end < 0:
            return None
        body = text[_next_line(text, at) : end]
        if prefix:
            body = body.replace(prefix, " ")
        return _table(_rows(body), width, sym, xyz, "force table")
    return None


def _coord_table(text: str) -> tuple[list[str] | None, np.ndarray] | None:
    """The first ATOMIC COORDINATES IN ANGSTROM table (index kind element Z x y z ...)."""
    m = _COORDS.search(text)
    if m is None:
        return None
    start = text.find("Atom", m.end())
    if start < 0:
        return None
    start = _next_line(text, start)
    end = text.find("\n\n", start + 1)
    return _table(_rows(text[start : end if end >= 0 else len(text)]), 7, 2, 4, "coordinate table")


def _energies(text: str, unreadable: list[str]) -> list[float]:
    """Every total energy printed; unreadable ones (e.g. ``****``) are listed in `unreadable`."""
    values = []
    for raw in _ENERGY.findall(text):
        try:
            values.append(float(raw))
        except ValueError:
            unreadable.append(f"the total energy is unreadable ({raw[:30]!r}: overflowed or garbled)")
    return values


def read_output(text: str) -> CP2KOutput:
    """Extract termination, SCF state, energy, forces and coordinates from output text.

    Never raises: whatever cannot be read is listed in `CP2KOutput.unreadable`.
    """
    unreadable: list[str] = []
    tables = []
    for read in (_force_table, _coord_table):
        try:
            tables.append(read(text))
        except _Unreadable as exc:
            unreadable.append(str(exc))
            tables.append(None)
    forces, coords = tables
    version = _VERSION.search(text)
    return CP2KOutput(
        version=version.group(1) if version else None,
        normal_end=_NORMAL_END in text,
        abort_message=_abort_message(text),
        scf_not_converged=_SCF_NOT_CONVERGED in text,
        walltime_exceeded=_WALLTIME_MSG in text,
        energies_ha=_energies(text, unreadable),
        force_symbols=forces[0] if forces else None,
        forces_au=forces[1] if forces else None,
        coord_symbols=coords[0] if coords else None,
        coords_A=coords[1] if coords else None,
        unreadable=unreadable,
    )


def stopped_by_time_limit(status: RunStatus) -> bool:
    """A TERM/KILL (or, with no signal recorded, the exit code of one): a time limit. A
    signal named by the scheduler (CANCELLED, OUT_OF_MEMORY, ...) is not."""
    return status.signal in WALLTIME_SIGNALS or (not status.signal and status.exit_code in (124, 137, 143))


def read_status(path: Path) -> RunStatus | None:
    """Parse ``run.status`` (key=value lines written by the run script); None if absent."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        exit_code = int(values.get("exit_code", ""))
    except ValueError:
        return None  # half-written or foreign file: treat as no status
    runtime = values.get("runtime_s")
    try:
        runtime_s = float(runtime) if runtime else None
    except ValueError:
        runtime_s = None
    return RunStatus(
        exit_code=exit_code, signal=values.get("signal", "").strip(), runtime_s=runtime_s
    )


def tail_lines(path: Path, n: int = 3) -> str:
    """The last `n` non-blank lines of a log, joined with ' | ' ('' if there is no file)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return ""
    return " | ".join(lines[-n:])


def _fail(job_id: str, cls: str, msg: str, runtime: float | None) -> JobResult:
    return JobResult(job_id=job_id, ok=False, failure_class=cls, message=msg, runtime_s=runtime)  # type: ignore[arg-type]


def classify(
    job_id: str,
    out: CP2KOutput | None,
    status: RunStatus | None,
    atoms: Atoms,
    *,
    stderr_tail: str = "",
) -> JobResult:
    """Turn what a job left behind into a label (eV, eV/Å) or a failure class with a reason.

    Order matters: a run that was never started is ``not_run``; one terminated by a signal
    or CP2K's own walltime is ``walltime``; an SCF that did not converge is
    ``scf_not_converged`` even when CP2K printed energy and forces; other aborts and
    non-zero exits are ``crashed``; output without normal termination is ``truncated``;
    output that does not describe this frame, or holds unreadable (overflowed, garbled,
    duplicated) values, is ``inconsistent``; non-finite numbers are ``implausible_forces``.
    """
    runtime = status.runtime_s if status else None
    if status is not None and status.signal == "INT":
        return _fail(
            job_id,
            "not_run",
            "interrupted by the user before it finished; rerun to run it",
            runtime,
        )
    stopped = status is not None and stopped_by_time_limit(status)
    if out is None or not out.normal_end:
        if stopped or (out is not None and out.walltime_exceeded):
            how = status.signal if status is not None and status.signal else "the time limit"
            return _fail(
                job_id, "walltime", f"stopped by {how} (walltime) before CP2K finished", runtime
            )
        if status is not None and status.signal:
            return _fail(job_id, "crashed", f"ended by the scheduler: {status.signal}", runtime)
    if out is None:
        if status is None:
            return _fail(job_id, "not_run", "no output: the job has not run yet", None)
        return _fail(
            job_id,
            "crashed",
            f"no CP2K output; exit code {status.exit_code}"
            + (f"; stderr: {stderr_tail}" if stderr_tail else ""),
            runtime,
        )
    if out.scf_not_converged:
        return _fail(
            job_id, "scf_not_converged", "SCF run NOT converged (labels rejected)", runtime
        )
    if out.abort_message is not None:
        return _fail(job_id, "crashed", f"CP2K aborted: {out.abort_message}", runtime)
    if status is not None and status.exit_code != 0:
        detail = f"; stderr: {stderr_tail}" if stderr_tail else ""
        return _fail(
            job_id, "crashed", f"CP2K exited with code {status.exit_code}{detail}", runtime
        )
    if not out.normal_end:
        why = "" if status is not None else " (no exit status recorded: still running, or killed)"
        return _fail(job_id, "truncated", f"output ends before 'PROGRAM ENDED'{why}", runtime)
    n = len(atoms)
    if out.unreadable:
        return _fail(job_id, "inconsistent", "; ".join(out.unreadable), runtime)
    if len(out.energies_ha) != 1:
        return _fail(
            job_id,
            "inconsistent",
            f"expected one total energy, found {len(out.energies_ha)}",
            runtime,
        )
    if out.forces_au is None:
        return _fail(
            job_id, "inconsistent", "no force table in the output (is PRINT FORCES on?)", runtime
        )
    if out.forces_au.shape != (n, 3):
        return _fail(
            job_id,
            "inconsistent",
            f"output has forces for {out.forces_au.shape[0]} atoms, the frame has {n}",
            runtime,
        )
    symbols = atoms.get_chemical_symbols()
    for what, found in (("force table", out.force_symbols), ("coordinates", out.coord_symbols)):
        if found is not None and found != symbols:
            bad = (
                next(i for i, (a, b) in enumerate(zip(found, symbols, strict=False)) if a != b)
                if len(found) == n
                else None
            )
            where = (
                f" (first at atom {bad})" if bad is not None else f" ({len(found)} vs {n} atoms)"
            )
            return _fail(
                job_id,
                "inconsistent",
                f"elements in the {what} differ from the frame{where}",
                runtime,
            )
    if out.coords_A is None:
        return _fail(
            job_id,
            "inconsistent",
            "no atomic coordinates in the output to check against the frame",
            runtime,
        )
    delta = out.coords_A - atoms.positions
    if atoms.pbc.any() and abs(atoms.cell.volume) > 0:
        frac = np.linalg.solve(atoms.cell.T, delta.T).T
        frac[:, atoms.pbc] -= np.round(frac[:, atoms.pbc])
        delta = frac @ atoms.cell.array
    worst = float(np.max(np.linalg.norm(delta, axis=1)))
    if not worst <= POSITION_TOLERANCE_A:  # also catches NaN coordinates
        atom = int(np.argmax(np.linalg.norm(delta, axis=1)))
        return _fail(
            job_id,
            "inconsistent",
            f"positions in the output differ from the frame by {worst:.3g} Å (atom {atom})",
            runtime,
        )
    energy = out.energies_ha[0] * HARTREE_EV
    forces = out.forces_au * FORCE_AU_EV_A
    if not math.isfinite(energy) or not np.all(np.isfinite(forces)):
        return _fail(job_id, "implausible_forces", "energy or forces are not finite", runtime)
    return JobResult(job_id=job_id, ok=True, energy=energy, forces=forces, runtime_s=runtime)


def parse_attempt(job_id: str, attempt_dir: Path, atoms: Atoms) -> JobResult:
    """Classify the CP2K attempt in `attempt_dir` (output.log, run.status, stderr.log)."""
    status = read_status(attempt_dir / STATUS_NAME)
    try:
        text = (attempt_dir / OUTPUT_NAME).read_text(errors="replace")
    except FileNotFoundError:
        out = None
    else:
        out = read_output(text) if text.strip() else None
    return classify(job_id, out, status, atoms, stderr_tail=tail_lines(attempt_dir / STDERR_NAME))
