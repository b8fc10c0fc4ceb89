"""Regenerate the stored CP2K outputs of tests/data/cp2k/ (one directory per case).

Real cases come from CP2K 2023.1 (Debian's cp2k.psmp) on one water molecule in a 6 Å box
at 200/40 Ry, run through eip-al's own job directories; their timing and reference
sections are trimmed. Constructed cases are edits of a real output (said so in NOTE):

    python tests/data/cp2k/make_outputs.py        # from the repository root, ~30 s

Each case directory holds what a job directory holds after the run: frame.extxyz,
output.log, and run.status / stderr.log where the run left them.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write

from eip_al.config import CP2KConfig
from eip_al.label.backends.local import run_script_local
from eip_al.label.cp2k import CP2KLabeler

HERE = Path(__file__).resolve().parent


def water() -> Atoms:
    return Atoms(
        "OH2",
        positions=[[3.0, 3.0, 3.1], [3.95, 3.0, 2.55], [2.24, 3.1, 2.51]],
        cell=np.eye(3) * 6.0,
        pbc=True,
    )


def trim(text: str) -> str:
    """Drop CP2K's timing table and reference list (long, irrelevant to parsing)."""
    text = re.sub(
        r"\n -+\n -\s+-\n -\s+T I M I N G.*?(?=\n The number of warnings)",
        "\n [timing table trimmed]",
        text,
        flags=re.S,
    )
    text = re.sub(
        r"\n -+\n -\s+-\n -\s+R E F E R E N C E S.*?(?=\n -+\n -\s+-\n -\s+T I M I N G|\n \[timing)",
        "\n [references trimmed]",
        text,
        flags=re.S,
    )
    return text


def run_case(
    name: str, cfg: CP2KConfig, atoms: Atoms, timeout_s: float = 600, note: str = ""
) -> Path:
    case = HERE / name
    if case.exists():
        shutil.rmtree(case)
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job"
        CP2KLabeler(cfg).prepare(atoms, job)
        run_script_local(job / "run.sh", timeout_s, grace_s=5)
        case.mkdir()
        for fname in ("output.log", "run.status", "stderr.log"):
            if (job / fname).exists() and (job / fname).stat().st_size:
                text = (job / fname).read_text(errors="replace")
                (case / fname).write_text(trim(text) if fname == "output.log" else text)
    write(case / "frame.extxyz", atoms)
    (case / "NOTE").write_text(note or f"real CP2K 2023.1 run ({name})\n")
    return case


def main() -> None:
    base = dict(cutoff_ry=200, rel_cutoff_ry=40, eps_scf=1e-6, omp_num_threads=1)
    ok = run_case("ok", CP2KConfig(**base), water())
    template = (HERE.parents[2] / "templates/cp2k/water-pbe-d3.inp").read_text()
    short = HERE / "short_scf.inp"
    short.write_text(template.replace("MAX_SCF 10", "MAX_SCF 1"))
    run_case(
        "scf_not_converged",
        CP2KConfig(**base, max_scf=2, user_input=short),
        water(),
        note="real CP2K 2023.1 run with MAX_SCF 2 and OUTER_SCF MAX_SCF 1: warns 'SCF run NOT converged', "
        "exits 0 with energy and forces\n",
    )
    short.unlink()
    bad = HERE / "bad_potential.inp"
    bad.write_text(template.replace("GTH-PBE-q6", "GTH-PBE-q7"))
    run_case(
        "crashed",
        CP2KConfig(**base, user_input=bad),
        water(),
        note="real CP2K 2023.1 run asking for a potential that does not exist: [ABORT], exit 1\n",
    )
    bad.unlink()
    run_case(
        "walltime",
        CP2KConfig(**base),
        water(),
        timeout_s=1.0,
        note="real CP2K 2023.1 run stopped by SIGTERM after 1 s (local timeout): partial output, signal=TERM\n",
    )

    text = (ok / "output.log").read_text()
    frame = ok / "frame.extxyz"

    def constructed(
        name: str,
        output: str | None,
        note: str,
        status: str | None = None,
        atoms: Atoms | None = None,
        stderr: str | None = None,
    ) -> None:
        case = HERE / name
        if case.exists():
            shutil.rmtree(case)
        case.mkdir()
        if output is not None:
            (case / "output.log").write_text(output)
        if status is not None:
            (case / "run.status").write_text(status)
        if stderr is not None:
            (case / "stderr.log").write_text(stderr)
        if atoms is None:
            shutil.copy(frame, case / "frame.extxyz")
        else:
            write(case / "frame.extxyz", atoms)
        (case / "NOTE").write_text(f"constructed: {note}\n")

    cut = text.index(" SCF WAVEFUNCTION OPTIMIZATION")
    constructed(
        "truncated", text[:cut], "the real 'ok' output cut before the SCF, no run.status (killed)"
    )
    constructed(
        "crashed_no_output",
        None,
        "no output, exit 127 and a shell error (launcher not found)",
        status="exit_code=127\nsignal=\nruntime_s=0.010\n",
        stderr="run.sh: line 15: mpirun: command not found\n",
    )
    moved = water()
    moved.positions[2] += [0.3, 0.0, 0.0]
    constructed(
        "inconsistent_positions",
        text,
        "the real 'ok' output with a frame whose atom 2 moved 0.3 Å",
        status=(ok / "run.status").read_text(),
        atoms=moved,
    )
    constructed(
        "inconsistent_atoms",
        text,
        "the real 'ok' output with a frame of 4 atoms",
        status=(ok / "run.status").read_text(),
        atoms=water() + Atoms("H", positions=[[1.0, 1.0, 1.0]]),
    )
    at = text.index("ATOMIC FORCES in [a.u.]")

    def set_fx(value: str) -> str:  # F_x of atom 1 in the force table
        return text[:at] + re.sub(
            r"(\n\s+1\s+1\s+O\s+)(\S+)", lambda m: m.group(1) + value, text[at:], count=1
        )

    big = set_fx("12.000000000000")
    constructed(
        "implausible_forces",
        big,
        "the real 'ok' output with F_x of the O atom set to 12 Hartree/Bohr",
        status=(ok / "run.status").read_text(),
    )
    nan = set_fx("NaN")
    constructed(
        "implausible_nan",
        nan,
        "the real 'ok' output with F_x of the O atom set to NaN",
        status=(ok / "run.status").read_text(),
    )
    constructed("not_run", None, "a prepared job that never ran (no output, no run.status)")
    # CP2K >= 2025 layout: energy '[hartree]' without colon, 'FORCES|' rows; the SCF abort box.
    energy = re.search(r"energy \[a\.u\.\]:\s+(\S+)", text).group(1)
    rows = (
        re.search(r"ATOMIC FORCES in \[a\.u\.\]\n\n.*?\n(.*?)\n SUM OF", text, re.S)
        .group(1)
        .splitlines()
    )
    new = text[: text.index(" ENERGY|")]
    new += f" ENERGY| Total FORCE_EVAL ( QS ) energy [hartree]             {energy}\n\n"
    new += " FORCES| Atomic forces [hartree/bohr]\n FORCES|   Atom     x               y               z               |f|\n"
    for row in rows:
        i, f = row.split()[0], [float(v) for v in row.split()[3:6]]
        new += f" FORCES| {int(i):6d} {f[0]:15.8E} {f[1]:15.8E} {f[2]:15.8E} {np.linalg.norm(f):15.8E}\n"
    new += " FORCES| Sum    0.0 0.0 0.0\n\n" + text[text.index(" [timing") :]
    constructed(
        "ok_2025_layout",
        new,
        "the real 'ok' output rewritten in the CP2K >= 2025 energy/force layout",
        status=(ok / "run.status").read_text(),
    )
    box = (
        "\n *******************************************************************************\n"
        " *   ___                                                                       *\n"
        " *  /   \\                                                                      *\n"
        " * [ABORT]                                                                     *\n"
        " *  \\___/     SCF run NOT converged. To continue the calculation regardless,   *\n"
        " *    |             please set the keyword IGNORE_CONVERGENCE_FAILURE.         *\n"
        " *  O/|                                                                        *\n"
        " * /| |                                                                        *\n"
        " * / \\                                                            qs_scf.F:611 *\n"
        " *******************************************************************************\n"
    )
    constructed(
        "scf_abort_2025",
        text[: text.index("  *** SCF run converged")] + box,
        "the real 'ok' output ending in CP2K >= 2024's SCF abort box (exit 1)",
        status="exit_code=1\nsignal=\nruntime_s=2.000\n",
    )


if __name__ == "__main__":
    main()
