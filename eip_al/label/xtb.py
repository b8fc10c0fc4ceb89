"""GFN2-xTB / GFN1-xTB labels through tblite's ASE calculator (`labeler.kind: xtb`).

    labeler:
      kind: xtb
      xtb: {method: GFN2-xTB}        # or GFN1-xTB; periodic frames (any pbc) are periodic in tblite

The generic ASE labeler with the calculator fixed to `tblite.ase:TBLite` and its settings
typed (eip_al.config.XTBConfig). tblite is the optional extra `xtb` (scripts/setup.sh
installs it). An SCF that does not converge within `max_iterations` is
`scf_not_converged`.
"""

from __future__ import annotations

import importlib.util

from eip_al.config import ConfigError, LabelerConfig, XTBConfig
from eip_al.label.ase import ASELabeler
from eip_al.schemas import TheoryFingerprint

CALCULATOR = "tblite.ase:TBLite"
INSTALL_HINT = "pip install -e '.[xtb]' (or scripts/setup.sh)"


def tblite_problem() -> str | None:
    """Why tblite cannot be used here (None if it can)."""
    if importlib.util.find_spec("tblite") is None:
        return f"labeler.kind xtb: tblite is not installed ({INSTALL_HINT})"
    return None


class XTBLabeler(ASELabeler):
    """Labels frames with tblite's GFN-xTB."""

    kind = "xtb"

    def __init__(self, config: XTBConfig | None = None) -> None:
        self.config = config if config is not None else XTBConfig()
        problem = tblite_problem()
        if problem:
            raise ConfigError(problem)
        self.omp_num_threads = self.config.omp_num_threads
        self._setup(CALCULATOR, self.tblite_kwargs(), "labeler.xtb")

    @classmethod
    def describe(cls, lab: LabelerConfig) -> str:
        return f"xtb ({lab.xtb.method}, tblite)"

    def tblite_kwargs(self) -> dict[str, object]:
        """TBLite's constructor arguments for these settings (quiet: job logs stay small)."""
        c = self.config
        return {
            "method": c.method,
            "accuracy": c.accuracy,
            "electronic_temperature": c.electronic_temperature_K,
            "max_iterations": c.max_iterations,
            "charge": c.charge,
            "verbosity": 0,
        }

    def theory(self) -> TheoryFingerprint:
        c = self.config
        return TheoryFingerprint(
            code="tblite",
            method=c.method,
            extra={
                "accuracy": f"{c.accuracy:g}",
                "electronic_temperature_K": f"{c.electronic_temperature_K:g}",
                "charge": str(c.charge),
            },
        )
