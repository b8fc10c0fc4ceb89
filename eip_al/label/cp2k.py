"""The CP2K labeler: one ENERGY_FORCE single point per frame, from a validated input deck.

The deck is either the preset `templates/cp2k/water-pbe-d3.inp` (variables CUTOFF,
REL_CUTOFF, EPS_SCF, MAX_SCF filled from `labeler.cp2k`) or the user's full input
(`labeler.cp2k.user_input`; its own values win, missing cutoffs/EPS_SCF/MAX_SCF are
filled from the config). Either way it is parsed with cp2k-input-tools against the
*installed* CP2K's input schema (`cp2k.psmp --xml`, cached per executable), the
settings eip-al relies on are forced (RUN_TYPE ENERGY_FORCE, forces and coordinates
printed to the output, no wavefunction restart files), and the deck is regenerated
with cp2k-input-tools. Each job gets the frame's cell and coordinates; the generated
input (and the retry input) is parsed again against the schema when the deck is loaded,
before any job is written.

Job directory (attempt 1; a retry lives in `retry-1/` with the same files)::

    input.inp    the CP2K input of this frame
    run.sh       runs CP2K here (launcher from the config) and records run.status
    output.log   CP2K's output;  stdout.log / stderr.log: the process streams
    run.status   exit_code, signal, runtime_s: written when the run ends or is stopped
"""

from __future__ import annotations

import copy
import gc
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from cp2k_input_tools import DEFAULT_CP2K_INPUT_XML
from cp2k_input_tools.generator import CP2KInputGenerator
from cp2k_input_tools.parser import CP2KInputParser
from cp2k_input_tools.parser_errors import ParserError
from cp2k_input_tools.tokenizer import TokenizerError

from eip_al.atomic import atomic_write_bytes, atomic_write_text
from eip_al.config import ConfigError, CP2KConfig, LabelerConfig
from eip_al.io import FrameError
from eip_al.label.backends import backend_for
from eip_al.label.backends.local import run_scripts_local
from eip_al.label.backends.script import job_script_text
from eip_al.label.base import JobResult, Labeler, template_path
from eip_al.label.parse import OUTPUT_NAME, STATUS_NAME, parse_attempt, read_status
from eip_al.schemas import TheoryFingerprint

log = logging.getLogger(__name__)

INPUT_NAME = "input.inp"
SCRIPT_NAME = "run.sh"
RETRY_DIR = "retry-1"
PROJECT = "cp2k"
UNITS = "ase.units CODATA2014 (Hartree, Bohr)"

# schema elements that only carry documentation: dropped from the cached copy (faster to load)
_DOC_ELEMENTS = re.compile(
    rb"<(DESCRIPTION|LOCATION|USAGE|REFERENCE|DEPRECATION_NOTICE)\b[^>]*>.*?</\1>\s*", re.S
)
_CELL = ("@EIPAL_CELL_A@", "@EIPAL_CELL_B@", "@EIPAL_CELL_C@")
_COORDS = "@EIPAL_COORDS@"
_DISPERSION = {"DFTD2": "D2", "DFTD3": "D3", "DFTD3(BJ)": "D3(BJ)", "DFTD4": "D4"}


class CP2KInputError(ConfigError):
    """A CP2K input deck (template or user input) is unusable; names the file and problem."""


# ------------------------------------------------------------------------- schema
def cache_dir() -> Path:
    """Where eip-al caches derived files ($EIP_AL_CACHE_DIR, else $XDG_CACHE_HOME/eip-al)."""
    if os.environ.get("EIP_AL_CACHE_DIR"):
        return Path(os.environ["EIP_AL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "eip-al"


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: parsing the 30 MB schema builds ~10^6 objects (5x faster)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def installed_schema(executable: str) -> Path:
    """The input schema of the CP2K at `executable` (`cp2k --xml`), cached per binary.

    The cache key is the resolved binary path, size and mtime, so upgrading CP2K makes a
    new schema. Documentation elements are dropped from the cached copy.
    """
    found = shutil.which(executable)
    if found is None:
        raise CP2KInputError(f"labeler.cp2k.executable: '{executable}' not found on PATH")
    exe = Path(found).resolve()
    st = exe.stat()
    key = hashlib.sha256(f"{exe}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "cp2k-schema" / key / "cp2k_input.xml"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="eip-cp2k-xml-") as tmp:
        res = subprocess.run(
            [str(exe), "--xml"], cwd=tmp, capture_output=True, text=True, timeout=300
        )
        raw = Path(tmp) / "cp2k_input.xml"
        if res.returncode != 0 or not raw.exists():
            raise CP2KInputError(
                f"'{exe} --xml' failed (exit {res.returncode}): {res.stderr.strip()[-500:]}"
            )
        pruned = _DOC_ELEMENTS.sub(b"", raw.read_bytes())
    with _gc_paused():
        try:
            ET.fromstring(pruned)
        except ET.ParseError as exc:
            raise CP2KInputError(f"'{exe} --xml' wrote an unreadable schema: {exc}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, pruned)
    return target


def resolve_schema(cfg: CP2KConfig) -> Path:
    """The schema to validate against: config, else the installed CP2K, else the bundled one.

    The bundled schema (cp2k-input-tools, CP2K 2024.1) is only a fallback for preparing
    jobs on a machine without CP2K (export/slurm); a warning says so.
    """
    if cfg.schema_xml is not None:
        if not Path(cfg.schema_xml).exists():
            raise CP2KInputError(f"labeler.cp2k.schema_xml: {cfg.schema_xml} not found")
        return Path(cfg.schema_xml)
    if shutil.which(cfg.executable) is not None:
        return installed_schema(cfg.executable)
    log.warning(
        "CP2K executable %r not found: validating inputs against the schema bundled with "
        "cp2k-input-tools (CP2K 2024.1); set labeler.cp2k.schema_xml to the schema of the "
        "CP2K that will run the jobs",
        cfg.executable,
    )
    return Path(DEFAULT_CP2K_INPUT_XML)


_TOOLS_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _parser(schema: Path) -> CP2KInputParser:
    with _gc_paused():
        return CP2KInputParser(xmlspec=str(schema))


@lru_cache(maxsize=4)
def _generator(schema: Path) -> CP2KInputGenerator:
    with _gc_paused():
        return CP2KInputGenerator(xmlspec=str(schema), indent_shift=2)


def parse_input(
    text: str, *, source: str, schema: Path, base_dir: Path, variables: dict[str, str] | None = None
) -> dict[str, Any]:
    """Parse CP2K input text into cp2k-input-tools' canonical tree; errors name file and line."""
    with _TOOLS_LOCK:
        parser = _parser(schema)
        # cp2k-input-tools (pinned 0.9.3) takes the @INCLUDE base only in its constructor,
        # which re-reads the 30 MB schema each time; one parser per schema, base set per parse
        parser._base_inc_dir = str(base_dir)
        try:
            return parser.parse(io.StringIO(text), dict(variables or {}))
        except (ParserError, TokenizerError) as exc:
            ctx = exc.args[1] if len(exc.args) > 1 else None
            line = getattr(ctx, "linenr", None)
            where = f"{source}:{line}" if line else source
            cause = f" ({exc.__cause__})" if exc.__cause__ else ""
            shown = f": {ctx.line.strip()!r}" if getattr(ctx, "line", None) else ""
            raise CP2KInputError(
                f"{where}: {exc.args[0]}{cause}{shown} [schema {schema}]"
            ) from None


def render_tree(tree: dict[str, Any], schema: Path) -> str:
    """Regenerate CP2K input text from a canonical tree with cp2k-input-tools."""
    with _TOOLS_LOCK:
        return "\n".join(_generator(schema).line_iter(tree)) + "\n"


# ------------------------------------------------------------------------- deck
def _one(node: dict[str, Any], key: str) -> dict[str, Any]:
    """The (only) subsection `key` of `node`, created if absent; lists of one are unwrapped."""
    value = node.get(key)
    if value is None:
        node[key] = value = {}
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(key[1:].upper())
        value = value[0]
    return value


def _words(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(_words(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class CP2KDeck:
    """A validated deck with per-job placeholders for cell and coordinates."""

    source: Path
    schema: Path
    text: str  # the canonical tree rendered by cp2k-input-tools (placeholders in CELL/COORD)
    retry_text: str  # the same deck with the stronger SCF recipe
    kinds: frozenset[str]
    theory: TheoryFingerprint


def _template_path(cfg: CP2KConfig) -> tuple[Path, bool]:
    if cfg.user_input is not None:
        path = Path(cfg.user_input)
        if not path.exists():
            raise CP2KInputError(f"labeler.cp2k.user_input: {path} not found")
        return path, True
    path = template_path(cfg.template)
    if not path.exists():
        raise CP2KInputError(f"labeler.cp2k.template: {cfg.template} not found")
    return path, False


def load_deck(cfg: CP2KConfig, schema: Path | None = None) -> CP2KDeck:
    """Parse the template or user deck, force what labeling needs, fingerprint, regenerate."""
    source, is_user = _template_path(cfg)
    schema = schema if schema is not None else resolve_schema(cfg)
    variables = {
        "CUTOFF": f"{cfg.cutoff_ry:g}",
        "REL_CUTOFF": f"{cfg.rel_cutoff_ry:g}",
        "EPS_SCF": f"{cfg.eps_scf:.6E}",
        "MAX_SCF": str(cfg.max_scf),
    }
    tree = parse_input(
        source.read_text(),
        source=str(source),
        schema=schema,
        base_dir=source.resolve().parent,
        variables=variables,
    )
    try:
        kinds, theory = _force_labeling_settings(tree, cfg, schema, source.resolve().parent)
    except ValueError as exc:
        raise CP2KInputError(f"{source}: {exc}") from None
    if is_user:
        theory.extra["user_input"] = source.name
    retry_tree = copy.deepcopy(tree)
    _strengthen_scf(_dft(retry_tree))
    deck = CP2KDeck(
        source=source,
        schema=schema,
        text=render_tree(tree, schema),
        retry_text=render_tree(retry_tree, schema),
        kinds=frozenset(kinds),
        theory=theory,
    )
    # validate what jobs will get (both recipes) against the schema, before any job exists
    probe = Atoms(kinds[:1], positions=[[0.1, 0.2, 0.3]], cell=np.eye(3) * 10.0, pbc=True)
    for label, text in (("generated input", deck.text), ("generated retry input", deck.retry_text)):
        parse_input(
            render_job_input(text, probe),
            source=f"{label} from {source}",
            schema=schema,
            base_dir=source.resolve().parent,
        )
    return deck


def _dft(tree: dict[str, Any]) -> dict[str, Any]:
    return _one(tree["+force_eval"][0], "+dft")


def _force_labeling_settings(
    tree: dict[str, Any], cfg: CP2KConfig, schema: Path, base_dir: Path
) -> tuple[list[str], TheoryFingerprint]:
    """Edit `tree` in place for single-point labeling; return the kinds and the fingerprint."""
    if "+ext_restart" in tree:
        raise ValueError("&EXT_RESTART is not allowed in a labeling input (it overrides the deck)")
    glob = _one(tree, "+global")
    glob["run_type"] = "ENERGY_FORCE"
    glob["project_name"] = PROJECT
    if str(glob.get("print_level", "low")).upper() == "SILENT":
        glob["print_level"] = "LOW"
    evals = tree.get("+force_eval")
    if not isinstance(evals, list) or len(evals) != 1:
        raise ValueError(
            f"need exactly one &FORCE_EVAL (found {len(evals) if isinstance(evals, list) else 0})"
        )
    fe = evals[0]
    method = str(fe.setdefault("method", "QUICKSTEP")).upper()
    if method not in ("QS", "QUICKSTEP"):
        raise ValueError(f"&FORCE_EVAL METHOD {method}: only QUICKSTEP (DFT) decks are supported")
    if "+dft" not in fe:
        raise ValueError("&FORCE_EVAL has no &DFT section")
    dft = _one(fe, "+dft")

    forces: dict[str, Any] = {"_": "ON"}
    if _schema_has(
        schema, base_dir, "&FORCE_EVAL\n&PRINT\n&FORCES\nNDIGITS 12\n&END\n&END\n&END\n"
    ):
        forces["ndigits"] = 12
    _one(fe, "+print")["+forces"] = forces

    subsys = _one(fe, "+subsys")
    for section in ("+cell", "+topology"):
        if "multiple_unit_cell" in subsys.get(section, {}):
            raise ValueError(
                f"MULTIPLE_UNIT_CELL in &{section[1:].upper()} is not supported (it changes the atoms)"
            )
    subsys["+cell"] = {"a": _CELL[0], "b": _CELL[1], "c": _CELL[2], "periodic": "XYZ"}
    subsys["+coord"] = {"*": [_COORDS]}
    topo = subsys.get("+topology")
    if isinstance(topo, dict):
        for key in ("coord_file_name", "coord_file_format"):
            topo.pop(key, None)
    _one(subsys, "+print")["+atomic_coordinates"] = {"_": "ON"}

    mgrid = _one(dft, "+mgrid")
    mgrid.setdefault("cutoff", cfg.cutoff_ry)
    mgrid.setdefault("rel_cutoff", cfg.rel_cutoff_ry)
    scf = _one(dft, "+scf")
    scf.setdefault("eps_scf", cfg.eps_scf)
    scf.setdefault("max_scf", cfg.max_scf)
    scf_print = _one(scf, "+print")
    scf_print["+restart"] = {"_": "OFF"}
    scf_print["+restart_history"] = {"_": "OFF"}

    kinds = subsys.get("+kind", [])
    basis: dict[str, str] = {}
    potential: dict[str, str] = {}
    for kind in kinds:
        name = str(kind.get("_", "")).strip()
        if not kind.get("basis_set") or not kind.get("potential"):
            raise ValueError(f"&KIND {name} needs BASIS_SET and POTENTIAL")
        basis[name] = _words(kind["basis_set"])
        potential[name] = _words(kind["potential"])
    if not basis:
        raise ValueError("no &KIND sections (one per element, with BASIS_SET and POTENTIAL)")
    return sorted(basis), _fingerprint(dft, basis, potential)


def _fingerprint(
    dft: dict[str, Any], basis: dict[str, str], potential: dict[str, str]
) -> TheoryFingerprint:
    """Level of theory: functional, dispersion, basis/potential per element, cutoffs, EPS_SCF.

    `extra.dft_sha256` hashes the whole &DFT section except &SCF (algorithm settings a retry
    may change) and &PRINT, so any other change (grids, EPS_DEFAULT, charge, ...) shows too.
    """
    xc = dft.get("+xc")
    if not isinstance(xc, dict) or "+xc_functional" not in xc:
        raise ValueError("&DFT has no &XC/&XC_FUNCTIONAL")
    func = xc["+xc_functional"]
    name = func.get("_") or "+".join(k[1:].upper() for k in func if k.startswith("+")) or "NONE"
    extra: dict[str, str] = {"units": UNITS}
    method = str(name).upper()
    vdw = xc.get("+vdw_potential")
    if isinstance(vdw, dict):
        pairs = vdw.get("+pair_potential") or []
        pairs = pairs if isinstance(pairs, list) else [pairs]
        for pair in pairs:
            typ = str(pair.get("type", "")).upper()
            method += "-" + _DISPERSION.get(typ, typ)
            extra["dispersion"] = typ
            if "reference_functional" in pair:
                extra["dispersion_reference_functional"] = str(pair["reference_functional"]).upper()
            if "r_cutoff" in pair:
                extra["dispersion_r_cutoff"] = f"{pair['r_cutoff']:g}"
        if "+non_local" in vdw:
            nl = vdw["+non_local"]
            typ = str((nl[0] if isinstance(nl, list) else nl).get("type", "NON_LOCAL")).upper()
            method += "-" + typ
            extra["dispersion"] = typ
    for key in ("basis_set_file_name", "potential_file_name"):
        if key in dft:
            extra[key] = _words(dft[key])
    hashed = {k: v for k, v in dft.items() if k not in ("+scf", "+print")}
    extra["dft_sha256"] = hashlib.sha256(
        json.dumps(hashed, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    mgrid = dft.get("+mgrid", {})
    return TheoryFingerprint(
        code="cp2k",
        method=method,
        basis=basis,
        potential=potential,
        cutoff_ry=float(mgrid["cutoff"]),
        rel_cutoff_ry=float(mgrid["rel_cutoff"]),
        eps_scf=float(dft["+scf"]["eps_scf"]),
        extra=extra,
    )


def _strengthen_scf(dft: dict[str, Any]) -> None:
    """The retry recipe: same level of theory (EPS_SCF, grids untouched), more robust SCF.

    With OT: conjugate-gradient minimizer with a 3-point line search, the FULL_ALL
    preconditioner, twice the inner and outer iterations, a fresh atomic guess. With
    diagonalization: twice the iterations and half the mixing fraction.
    """
    scf = _one(dft, "+scf")
    scf["max_scf"] = 2 * int(scf.get("max_scf", 50))
    scf["scf_guess"] = "ATOMIC"
    if "+ot" in scf:
        ot = _one(scf, "+ot")
        ot.update({"minimizer": "CG", "linesearch": "3PNT", "preconditioner": "FULL_ALL"})
        outer = _one(scf, "+outer_scf")
        outer["max_scf"] = 2 * int(outer.get("max_scf", 10))
    else:
        mixing = _one(scf, "+mixing")
        mixing["alpha"] = 0.5 * float(mixing.get("alpha", 0.4))


@lru_cache(maxsize=8)
def _schema_has(schema: Path, base_dir: Path, snippet: str) -> bool:
    """True if `snippet` parses against `schema` (feature detection across CP2K versions)."""
    try:
        parse_input(snippet, source="<probe>", schema=schema, base_dir=base_dir)
    except CP2KInputError:
        return False
    return True


def render_job_input(text: str, atoms: Atoms) -> str:
    """Insert the frame's cell and coordinates (Å, 10 decimals) into a rendered deck."""
    cell = np.asarray(atoms.cell)
    for placeholder, vec in zip(_CELL, cell, strict=True):
        text = text.replace(placeholder, f"{vec[0]:.10f} {vec[1]:.10f} {vec[2]:.10f}", 1)
    at = text.index(_COORDS)
    line_start = text.rindex("\n", 0, at) + 1
    indent = text[line_start:at]
    rows = [
        (s, *xyz)
        for s, xyz in zip(atoms.get_chemical_symbols(), atoms.positions.tolist(), strict=True)
    ]
    coords = "\n".join([f"{indent}%s %.10f %.10f %.10f"] * len(rows)) % tuple(
        v for row in rows for v in row
    )
    return text[:line_start] + coords + text[at + len(_COORDS) :]


def run_script_text(cfg: CP2KConfig, title: str) -> str:
    """The run script of a CP2K job (`job_script_text` with the configured launcher)."""
    argv = [*cfg.launcher, cfg.executable, "-i", INPUT_NAME, "-o", OUTPUT_NAME]
    return job_script_text(argv, title, [OUTPUT_NAME], cfg.omp_num_threads, what="CP2K")


# ------------------------------------------------------------------------- labeler
class CP2KLabeler(Labeler):
    """Labels frames with CP2K single points (PBE-D3 preset or the user's deck)."""

    kind = "cp2k"

    def __init__(self, cfg: CP2KConfig, schema: Path | None = None) -> None:
        self.cfg = cfg
        self.deck = load_deck(cfg, schema)
        self._script = run_script_text(cfg, "eip-al CP2K single point")
        self._retry_script = run_script_text(
            cfg, "eip-al CP2K single point, retry with a stronger SCF"
        )

    def theory(self) -> TheoryFingerprint:
        return self.deck.theory

    def check_backend(self, backend: str) -> None:
        """A backend that runs CP2K here (local) needs its executable on PATH."""
        if backend_for(backend).runs_here and shutil.which(self.cfg.executable) is None:
            raise ConfigError(
                f"labeler.cp2k.executable: '{self.cfg.executable}' not found on PATH "
                f"(backend '{backend}' runs CP2K here; use 'export' or 'slurm' to run it elsewhere)"
            )

    @classmethod
    def describe(cls, lab: LabelerConfig) -> str:
        c = lab.cp2k
        deck = f"user input {c.user_input}" if c.user_input is not None else f"template {c.template}"
        return f"cp2k ({c.executable}, {deck})"

    @classmethod
    def preflight(cls, lab: LabelerConfig, runs_here: bool, elements: frozenset[str] | None) -> list[str]:
        """The schema file exists, CP2K (and its launcher) are on PATH when they run here, and
        the deck, with the labeling settings forced, parses, validates and has a &KIND for
        every element of the system. Checked without building the labeler."""
        c, problems = lab.cp2k, []
        if c.schema_xml is not None and not Path(c.schema_xml).is_file():
            problems.append(f"labeler.cp2k.schema_xml: {c.schema_xml} not found")
        programs = [("labeler.cp2k.executable", c.executable), *(("labeler.cp2k.launcher", x) for x in c.launcher[:1])]
        problems += [f"{what}: '{exe}' not found on PATH" for what, exe in programs if runs_here and shutil.which(exe) is None]
        try:
            deck = load_deck(c)
        except ConfigError as exc:
            return [*problems, str(exc)]
        missing = sorted(elements - deck.kinds) if elements is not None else []
        if missing:
            problems.append(f"{deck.source}: no &KIND for element(s) {missing} of the system (has {sorted(deck.kinds)})")
        return problems

    def check_frame(self, atoms: Atoms, where: str) -> None:
        """Raise FrameError if CP2K cannot label this frame with this deck."""
        if not atoms.pbc.all() or abs(atoms.cell.volume) < 1e-6:
            raise FrameError(
                f"{where}: CP2K labeling needs a periodic frame with a cell (pbc {atoms.pbc.tolist()})"
            )
        missing = set(atoms.get_chemical_symbols()) - self.deck.kinds
        if missing:
            raise FrameError(
                f"{where}: element(s) {sorted(missing)} have no &KIND in {self.deck.source} "
                f"(has {sorted(self.deck.kinds)})"
            )

    def input_text(self, atoms: Atoms, retry: bool = False) -> str:
        """The full CP2K input of this frame (the deck was validated when it was loaded)."""
        return render_job_input(self.deck.retry_text if retry else self.deck.text, atoms)

    def prepare(self, atoms: Atoms, job_dir: Path) -> None:
        """Write input.inp and run.sh into `job_dir` (a fresh directory the caller moves into place)."""
        job_dir = Path(job_dir)
        self.check_frame(atoms, str(job_dir))
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / INPUT_NAME).write_text(self.input_text(atoms))
        (job_dir / SCRIPT_NAME).write_text(self._script)

    def run_script(self, job_dir: Path) -> Path:
        """run.sh of the current attempt (the retry's once a retry was prepared)."""
        return self._attempt_dir(job_dir) / SCRIPT_NAME

    def _attempt_dir(self, job_dir: Path) -> Path:
        retry = Path(job_dir) / RETRY_DIR
        return retry if (retry / SCRIPT_NAME).exists() else Path(job_dir)

    def execute(self, job_dirs: list[Path]) -> None:
        """Run each job's current attempt locally (one after another) unless it has finished."""
        run_scripts_local([self.run_script(d) for d in job_dirs], self.cfg.timeout_s)

    def is_finished(self, job_dir: Path) -> bool:
        status = read_status(self._attempt_dir(job_dir) / STATUS_NAME)
        return status is not None and status.signal != "INT"

    def parse(self, job_dir: Path, atoms: Atoms) -> JobResult:
        job_dir = Path(job_dir)
        attempt = self._attempt_dir(job_dir)
        result = parse_attempt(job_dir.name, attempt, atoms)
        if attempt != job_dir:
            first = parse_attempt(job_dir.name, job_dir, atoms)
            result.attempts = 2
            if result.failure_class == "not_run":
                result.message = (
                    f"the SCF retry in {RETRY_DIR}/ has not run yet (attempt 1: {first.message})"
                )
            elif result.runtime_s is not None:
                result.runtime_s += first.runtime_s or 0.0
        return result

    def prepare_retry(self, job_dir: Path, atoms: Atoms, failed: JobResult) -> Path | None:
        """After an unconverged SCF (and if `retry_scf`), write `retry-1/` with the stronger recipe."""
        job_dir = Path(job_dir)
        if (
            not self.cfg.retry_scf
            or failed.failure_class != "scf_not_converged"
            or failed.attempts > 1
        ):
            return None
        retry = job_dir / RETRY_DIR
        retry.mkdir(exist_ok=True)
        atomic_write_text(retry / INPUT_NAME, self.input_text(atoms, retry=True))
        atomic_write_text(retry / SCRIPT_NAME, self._retry_script)
        return retry
