"""The CP2K output parser never raises on garbage: fuzzed real outputs (hypothesis) and the
cases the fuzzing found, kept as explicit regression tests.

Every mutated output must give a well-formed JobResult: a finite label of the right shape, or
a failure class with a message. Overflowed (``****``), garbled or duplicated values are
``inconsistent``.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eip_al.io import read_frames
from eip_al.label.jobs import _check_plausible
from eip_al.label.parse import classify, read_output, read_status
from eip_al.schemas import FailureClass

DATA = Path(__file__).parent / "data" / "cp2k"
CASES = sorted(p.parent.name for p in DATA.glob("*/output.log"))
OK_CASES = ["ok", "ok_2025_layout"]
FAILURE_CLASSES = set(typing.get_args(FailureClass))
NUMBER = re.compile(r"-?\d+\.\d+(?:E[+-]\d+)?")
GARBAGE = ["****", "*******************", "NaN", "-Infinity", "1.0D+05", "0.0.0", "1e999", "--1", "?"]
FUZZ = settings(max_examples=300, deadline=None, database=None,  # ~15 s for the file
                suppress_health_check=[HealthCheck.too_slow])


def _case(name: str):
    d = DATA / name
    atoms = read_frames(d / "frame.extxyz", require_labels=False)[0]
    return (d / "output.log").read_text(), read_status(d / "run.status"), atoms


def _parse(text: str, status, atoms):
    result = classify("j", read_output(text), status, atoms)
    return _check_plausible(result, len(atoms), max_force=100.0)


def _assert_well_formed(result, n_atoms: int) -> None:
    if result.ok:
        assert result.failure_class is None
        assert result.energy is not None and np.isfinite(result.energy)
        assert result.forces.shape == (n_atoms, 3) and np.all(np.isfinite(result.forces))
    else:
        assert result.failure_class in FAILURE_CLASSES
        assert result.message and "\n" not in result.message
        assert result.energy is None and result.forces is None


def _section(text: str, header: str, end: str) -> tuple[int, int]:
    at = text.index(header)
    return at, text.index(end, at) + len(end)


# --- mutations of a real output ----------------------------------------------------
@st.composite
def mutated(draw, cases=CASES):
    """A stored output with 1-4 random edits: a number replaced by garbage, a line
    duplicated or deleted, text inserted, the output cut, a block duplicated."""
    name = draw(st.sampled_from(cases))
    text, status, atoms = _case(name)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["number", "dup_line", "del_line", "insert", "cut", "dup_block"]))
        lines = text.splitlines(keepends=True)
        if kind == "number":
            spans = [m.span() for m in NUMBER.finditer(text)]
            if not spans:
                continue
            a, b = draw(st.sampled_from(spans))
            new = draw(st.one_of(st.sampled_from(GARBAGE), st.text(max_size=8)))
            text = text[:a] + new + text[b:]
        elif kind in ("dup_line", "del_line") and lines:
            i = draw(st.integers(0, len(lines) - 1))
            lines[i : i + 1] = [lines[i]] * (2 if kind == "dup_line" else 0)
            text = "".join(lines)
        elif kind == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.text(max_size=40)) + text[at:]
        elif kind == "cut":
            text = text[: draw(st.integers(0, len(text)))]
        elif kind == "dup_block":
            a = draw(st.integers(0, len(text)))
            b = draw(st.integers(a, min(len(text), a + 2000)))
            text = text[:b] + text[a:b] + text[b:]
    return text, status, atoms


@FUZZ
@given(mutated())
def test_mutated_outputs_never_raise(case) -> None:
    text, status, atoms = case
    _assert_well_formed(_parse(text, status, atoms), len(atoms))


@FUZZ
@given(st.sampled_from(OK_CASES), st.data())
def test_garbled_number_in_energy_or_forces_is_inconsistent(name: str, data) -> None:
    """Any label value replaced by an overflow (****) or garbage is caught, never read."""
    text, status, atoms = _case(name)
    header = "ATOMIC FORCES in [a.u.]" if name == "ok" else "FORCES| Atomic forces"
    end = "SUM OF ATOMIC FORCES" if name == "ok" else "FORCES| Sum"
    f0, f1 = _section(text, header, end)
    e0 = text.index("Total FORCE_EVAL")
    e1 = text.index("\n", e0)
    spans = [
        m.span() for m in NUMBER.finditer(text)
        if e0 <= m.start() < e1
        or (f0 <= m.start() < f1 - len(end) and not (name != "ok" and text[m.end()] == "\n"))
    ]  # energy, and force components (not the 2025 layout's |f| column, which is not read)
    a, b = data.draw(st.sampled_from(spans))
    garbage = data.draw(st.sampled_from(["****", "*********", "1.0D+05", "0.0.0", "--1", "x"]))
    result = _parse(text[:a] + garbage + text[b:], status, atoms)
    assert result.failure_class == "inconsistent", result.message


@FUZZ
@given(st.sampled_from(OK_CASES), st.integers(0, 2), st.sampled_from(["dup", "del"]))
def test_duplicated_or_missing_force_row_is_inconsistent(name: str, row: int, how: str) -> None:
    text, status, atoms = _case(name)
    header = "ATOMIC FORCES in [a.u.]" if name == "ok" else "FORCES| Atomic forces"
    lines = text.splitlines(keepends=True)
    first = next(i for i, ln in enumerate(lines) if header in ln)
    rows = [i for i in range(first, first + 6) if re.match(r"\s*(FORCES\|)?\s*\d+\s", lines[i])]
    i = rows[row]
    lines[i : i + 1] = [lines[i]] * (2 if how == "dup" else 0)
    result = _parse("".join(lines), status, atoms)
    assert result.failure_class == "inconsistent", result.message


# --- regression cases (found by the fuzzing above or reported) ---------------------
@pytest.mark.parametrize("name", OK_CASES)
def test_energy_printed_as_stars_is_inconsistent(name: str) -> None:
    """Reported: an energy printed as **** raised an uncaught ValueError in `eip-al ingest`."""
    text, status, atoms = _case(name)
    text = re.sub(r"(Total FORCE_EVAL.*?\s)(-17\.\d+)", r"\1*******************", text)
    result = _parse(text, status, atoms)
    assert result.failure_class == "inconsistent"
    assert "total energy is unreadable ('*******************': overflowed" in result.message


@pytest.mark.parametrize("name", OK_CASES)
def test_duplicated_force_table_is_inconsistent(name: str) -> None:
    """Reported: a second force table was accepted silently (the last one was read)."""
    text, status, atoms = _case(name)
    header = "ATOMIC FORCES in [a.u.]" if name == "ok" else "FORCES| Atomic forces"
    end = "SUM OF ATOMIC FORCES" if name == "ok" else "FORCES| Sum"
    a, b = _section(text, header, end)
    result = _parse(text[:b] + "\n" + text[a:b] + text[b:], status, atoms)
    assert result.failure_class == "inconsistent"
    assert "2 force tables in the output" in result.message


def test_overflowed_force_component_is_inconsistent() -> None:
    text, status, atoms = _case("ok")
    result = _parse(text.replace("-0.080350451300", "**************"), status, atoms)
    assert result.failure_class == "inconsistent"
    assert "force table holds an unreadable number '**************'" in result.message


def test_output_cut_right_after_a_table_header_does_not_raise() -> None:
    """Found by fuzzing: a header on the last line (no line break) made str.index raise."""
    text, status, atoms = _case("ok")
    for header in ("ATOMIC COORDINATES IN ANGSTROM\n\n   Atom", "ATOMIC FORCES in [a.u.]"):
        cut = text[: text.index(header) + len(header)]
        _assert_well_formed(_parse(cut + "\n PROGRAM ENDED AT", status, atoms), len(atoms))


def test_nan_coordinates_are_not_accepted() -> None:
    """NaN coordinates used to pass the position check (NaN > tol is False)."""
    text, status, atoms = _case("ok")
    result = _parse(text.replace("3.950000", "NaN", 1), status, atoms)
    assert result.failure_class == "inconsistent", result.message
