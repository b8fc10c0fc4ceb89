"""Any ASE calculator as the labeler (`labeler.kind: ase`).

    labeler:
      kind: ase
      ase: {calculator: "ase.calculators.emt:EMT", kwargs: {}}

Each job constructs `Class(**kwargs)` afresh (in-process threads never share one) and
labels with its forces and its force-consistent energy (`free_energy` when the calculator
gives one, else `energy`), so forces = −dE/dx also for smeared electronic structure. Job
files, `run.sh` and backends: `eip_al.label.jobfile`. A calculator that raises is a failed
job: `scf_not_converged` for ASE's SCFError or a CalculationFailed that says the SCF did
not converge, `crashed` otherwise; the run goes on. The theory fingerprint is the import
path plus the kwargs, so labels of different calculators or parameters never mix.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ase import Atoms
from ase.calculators.calculator import CalculationFailed, SCFError

from eip_al.config import ASELabelerConfig, ConfigError, LabelerConfig
from eip_al.label.base import import_object
from eip_al.label.jobfile import JobFileLabeler
from eip_al.schemas import TheoryFingerprint

_NOT_CONVERGED = re.compile(r"(scf|self.consistent).*(not|n't|fail).*conver|not.*converge", re.I)


class ASELabeler(JobFileLabeler):
    """Labels frames with the ASE calculator `labeler.ase.calculator`."""

    kind = "ase"

    def __init__(self, config: ASELabelerConfig) -> None:
        if config.calculator is None:
            raise ConfigError('labeler.ase.calculator: required ("module:Class") when labeler.kind is ase')
        self.config = config
        self.omp_num_threads = config.omp_num_threads
        self._setup(config.calculator, config.kwargs, "labeler.ase")

    def _setup(self, path: str, kwargs: dict[str, Any], field: str) -> None:
        """Import `path` and build it once with `kwargs`, so bad settings fail before any job."""
        self.calculator_path, self.kwargs = path, kwargs
        self._cls = import_object(path, f"{field}.calculator")
        try:
            json.dumps(kwargs)
            calc = self.make_calculator()
        except Exception as exc:  # any constructor error is a settings problem of this labeler
            raise ConfigError(f"{field}.kwargs: {path}({_show(kwargs)}) failed: {type(exc).__name__}: {exc}") from None
        if not callable(getattr(calc, "get_forces", None)):
            raise ConfigError(f"{field}.calculator: {path} is not an ASE calculator (it has no get_forces)")

    @classmethod
    def describe(cls, lab: LabelerConfig) -> str:
        return f"ase ({lab.ase.calculator})"

    def make_calculator(self) -> Any:
        """A fresh calculator for one job."""
        return self._cls(**self.kwargs)

    def theory(self) -> TheoryFingerprint:
        """The calculator's import path and parameters (canonical JSON)."""
        return TheoryFingerprint(code="ase", method=self.calculator_path, extra={"kwargs": _show(self.kwargs)})

    def script_title(self) -> str:
        return f"eip-al {self.kind} label ({self.calculator_path})"  # import path: no shell metacharacters

    def compute(self, atoms: Atoms, fid: str) -> dict[str, Any]:
        """Energy (eV) and forces (eV/Å) from a fresh calculator; its exception is a failure class."""
        atoms.calc = self.make_calculator()
        try:
            forces = atoms.get_forces()
            energy = atoms.calc.results.get("free_energy")
            if energy is None:
                energy = atoms.get_potential_energy()
        except Exception as exc:  # whatever the calculator raises is this job's failure, not the run's
            text = f"{self.calculator_path}: {type(exc).__name__}: {exc}".strip()
            scf = isinstance(exc, SCFError) or (
                isinstance(exc, CalculationFailed) and _NOT_CONVERGED.search(str(exc))
            )
            return {"failure_class": "scf_not_converged" if scf else "crashed", "message": text}
        return {"ok": True, "energy": float(energy), "forces": forces.tolist()}


def _show(kwargs: dict[str, Any]) -> str:
    return json.dumps(kwargs, sort_keys=True)
