#!/usr/bin/env python3
"""A stand-in for `cp2k.psmp -i input.inp -o output.log` in tests of the job machinery.

It reads the cell and coordinates from the input, and writes an output in CP2K 2023's
layout (energy, ATOMIC FORCES table, ATOMIC COORDINATES, PROGRAM ENDED) with a harmonic
toy energy E = sum_i k |r_i - c|^2 (c = cell centre), so labels are checkable. What it
does is chosen by the file `fake_mode` in the working directory or its parent (the job
directory of a retry), else $FAKE_CP2K_MODE, else `ok`:

    ok              converged single point
    noconv          'SCF run NOT converged' (exit 0) unless the input uses MINIMIZER CG
    noconv_always   'SCF run NOT converged' (exit 0) whatever the recipe
    abort           CP2K-style [ABORT] box, exit 1
    sleep:SECONDS   sleep first (for timeouts and interruption), then as `ok`

Every call appends a line to `calls.log` in the working directory.
"""

import os
import re
import sys
import time
from pathlib import Path

HARTREE = 27.211386024367243
BOHR = 0.5291772105638411
K = 0.05  # Hartree / Å^2


def main() -> int:
    args = sys.argv[1:]
    inp = Path(args[args.index("-i") + 1])
    out = Path(args[args.index("-o") + 1])
    text = inp.read_text()
    with open("calls.log", "a") as fh:
        fh.write(f"{time.time()}\n")
    mode = os.environ.get("FAKE_CP2K_MODE", "ok")
    for d in (Path("."), Path("..")):
        if (d / "fake_mode").exists():
            mode = (d / "fake_mode").read_text().strip()
            break
    if mode.startswith("sleep:"):
        time.sleep(float(mode.split(":")[1]))
        mode = "ok"
    cell = [
        [float(v) for v in re.search(rf"^\s*{ax} (.+)$", text, re.M).group(1).split()]
        for ax in "ABC"
    ]
    coords = re.search(r"&COORD\n(.*?)\n\s*&END COORD", text, re.S).group(1).splitlines()
    atoms = [(ln.split()[0], [float(v) for v in ln.split()[1:4]]) for ln in coords]
    centre = [sum(cell[i][k] for i in range(3)) / 2 for k in range(3)]
    lines = [
        " CP2K| version string:                                   CP2K version 2023.1 (fake)",
        "",
    ]
    if mode == "abort":
        lines += [" *" * 40, " * [ABORT]", " *  \\___/  fake CP2K was told to abort", " *" * 40]
        out.write_text("\n".join(lines) + "\n")
        print("fake abort", file=sys.stderr)
        return 1
    lines += [
        " MODULE QUICKSTEP: ATOMIC COORDINATES IN ANGSTROM",
        "",
        "   Atom Kind Element         X             Y             Z       Z(eff)     Mass",
    ]
    for i, (sym, r) in enumerate(atoms, 1):
        lines.append(f"      {i} 1 {sym} 1 {r[0]:13.6f} {r[1]:13.6f} {r[2]:13.6f} 1.0000 1.0000")
    lines += ["", ""]
    if mode == "noconv_always" or (mode == "noconv" and "MINIMIZER CG" not in text):
        lines.append(" *** WARNING in qs_scf.F:601 :: SCF run NOT converged ***")
    else:
        lines.append("  *** SCF run converged in    10 steps ***")
    energy = sum(K * sum((r[k] - centre[k]) ** 2 for k in range(3)) for _, r in atoms) - 17.0
    lines += [
        "",
        f" ENERGY| Total FORCE_EVAL ( QS ) energy [a.u.]:              {energy:.15f}",
        "",
        " ATOMIC FORCES in [a.u.]",
        "",
        " # Atom   Kind   Element          X              Y              Z",
    ]
    for i, (sym, r) in enumerate(atoms, 1):
        f = [-2 * K * (r[k] - centre[k]) * BOHR for k in range(3)]  # Hartree/Bohr
        lines.append(f"      {i}      1      {sym}    {f[0]:14.8f} {f[1]:14.8f} {f[2]:14.8f}")
    lines += [
        " SUM OF ATOMIC FORCES          0.0 0.0 0.0 0.0",
        "",
        "  **** **** ******  **  PROGRAM ENDED AT                 2026-01-01 00:00:00.000",
    ]
    out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
