"""`EIPCalculator`: a trained model as a standard ASE calculator, for every uncertainty
source (eip_al/model/sources.py: the eIP model or an ensemble; the checkpoint's kind decides).

Results: ``energy``, ``free_energy``, ``forces`` (always the UNBIASED model force),
``uncertainty`` (σ_i, (N,)), ``uncertainty_components`` ((N,3)), ``aleatoric_components``
((N,3)), ``config_uncertainty`` (σ = mean_i σ_i), ``descriptor`` (mean final scalar
features, (F,), for farthest-point selection) and, when a UDD bias is given,
``energy_bias`` and ``forces_bias`` (raw −∂E_bias/∂R, before any limiter), both from the
same forward pass as the forces. ``stress`` (Voigt 6, eV/Å³, ASE's sign: (1/V)·∂E/∂ε)
comes from a strain derivative in the same pass, only when asked for (``"stress"`` in the
requested properties, or ``stress=True`` for NPT, so that forces and stress come from one
pass); with a bias also ``stress_bias``. Stress needs a cell periodic in all three
directions (`PropertyNotImplementedError` otherwise). When the checkpoint carries a calibration
(docs/calibration.md) also ``calibrated_uncertainty`` (expected per-atom force error,
eV/Å, (N,)) and ``config_calibrated_uncertainty`` (its mean over atoms).

Built for MD: parameters are frozen, one vesin neighbor list with a Verlet skin is kept
between steps (rebuilt only when an atom moved more than skin/2, or the cell, pbc or
species changed) and no per-atom Python loops run.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import vesin
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from eip_al.model.checkpoint import load_checkpoint
from eip_al.model.eip import BiasFn
from eip_al.model.errors import CheckpointError
from eip_al.model.evaluation import frames_to_graphs, predict_graphs, split_outputs
from eip_al.model.neighbors import Graph, SpeciesMap, frame_graph
from eip_al.model.painn import compile_backbones
from eip_al.model.sources import UncertaintySource
from eip_al.uq import Calibration, CalibrationError, calibration_from_meta


class EIPCalculator(Calculator):
    """ASE calculator for a model checkpoint (eIP or ensemble), with optional differentiable UDD bias."""

    implemented_properties = [
        "energy",
        "free_energy",
        "forces",
        "uncertainty",
        "uncertainty_components",
        "aleatoric_components",
        "config_uncertainty",
        "descriptor",
        "energy_bias",
        "forces_bias",
        "stress",
        "stress_bias",
        "calibrated_uncertainty",
        "config_calibrated_uncertainty",
    ]

    def __init__(
        self,
        checkpoint_path: Path | str,
        device: str = "auto",
        bias: BiasFn | None = None,
        skin: float = 0.5,
        dtype: str | None = None,
        stress: bool = False,
        compile: bool = False,
        **kwargs: Any,
    ):
        """`bias(σ, n_atoms) -> E_bias` (scalar tensor, eV) enables UDD bias forces;
        `skin` (Å) is the Verlet skin of the neighbor list; `dtype` ('float32' or
        'float64') overrides the checkpoint's precision; `stress=True` computes the
        stress with every evaluation (NPT); `compile=True` compiles the backbone with
        torch.compile (`compile_backbones`: the first pass compiles, later ones run faster)."""
        model, meta = load_checkpoint(checkpoint_path, device)
        self._setup(model, bias, skin, dtype, compile)
        self.stress = stress
        self.checkpoint_path = Path(checkpoint_path)
        self.meta = meta
        try:
            self.calibration = calibration_from_meta(meta, str(checkpoint_path))
        except CalibrationError as exc:
            raise CheckpointError(str(exc)) from None
        super().__init__(**kwargs)

    @classmethod
    def from_model(
        cls, model: UncertaintySource, bias: BiasFn | None = None, skin: float = 0.5, dtype: str | None = None,
        calibration: Calibration | None = None, compile: bool = False,
    ) -> EIPCalculator:
        """A calculator around a frozen copy of an in-memory model (e.g. right after training)."""
        calc = cls.__new__(cls)
        calc._setup(copy.deepcopy(model), bias, skin, dtype, compile)
        calc.stress = False
        calc.checkpoint_path = None
        calc.meta = {}
        calc.calibration = calibration
        Calculator.__init__(calc)
        return calc

    @classmethod
    def sharing(cls, template: EIPCalculator) -> EIPCalculator:
        """A calculator on `template`'s model object itself (no copy) with its own neighbor
        list and bias hook: one model in memory for many walkers."""
        calc = cls.__new__(cls)
        calc._share(template)
        Calculator.__init__(calc)
        return calc

    def _share(self, template: EIPCalculator) -> None:
        self._setup(template.model, None, template.skin, None)
        self.stress = False
        self.checkpoint_path, self.meta, self.calibration = template.checkpoint_path, template.meta, template.calibration

    def _setup(self, model: UncertaintySource, bias: BiasFn | None, skin: float, dtype: str | None,
               compile: bool = False) -> None:
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        if dtype is not None:
            if dtype not in ("float32", "float64"):
                raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
            model = model.to(getattr(torch, dtype))
        model.eval()
        model.requires_grad_(False)
        if compile:
            compile_backbones(model)
        self.model = model
        self.bias = bias
        self.skin = float(skin)
        self._species = SpeciesMap(model.spec.elements)
        self._nl: vesin.NeighborList | None = None
        self._nl_key: tuple | None = None

    def _neighbor_list(self, atoms: Atoms) -> vesin.NeighborList:
        """The cached vesin list; a new one when species, cell or pbc changed."""
        key = (atoms.numbers.tobytes(), np.asarray(atoms.cell.array).tobytes(), tuple(atoms.pbc))
        if self._nl is None or key != self._nl_key:
            self._nl = vesin.NeighborList(cutoff=self.model.spec.cutoff, full_list=True, skin=self.skin)
            self._nl_key = key
        return self._nl

    def graph(self, atoms: Atoms) -> Graph:
        """The graph of `atoms` (CPU, float64) from the cached neighbor list."""
        return frame_graph(atoms, self._species, self.model.spec.cutoff, "atoms", self._neighbor_list(atoms))

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        stress = self.wants_stress(properties)
        g = self.graph(self.atoms).to(self.model.device, self.model.dtype)
        with torch.enable_grad():
            out = self.model.predict(g, bias=self.bias, stress=stress)
        (res,) = unpack_results(out, g, [self.bias is not None])
        self.results = self._add_calibrated(res)

    def wants_stress(self, properties: Sequence[str]) -> bool:
        """Whether this evaluation computes the stress; a clear error for a cell that has none."""
        stress = self.stress or "stress" in properties
        if stress and not self.atoms.pbc.all():
            raise PropertyNotImplementedError(
                f"stress needs a cell periodic in all three directions (pbc={self.atoms.pbc.tolist()})")
        return stress

    def _add_calibrated(self, res: dict) -> dict:
        """Add the calibrated uncertainty (eV/Å of expected force error) when calibrated."""
        if getattr(self, "calibration", None) is not None:
            cal = self.calibration.apply(np.asarray(res["uncertainty"]))
            res["calibrated_uncertainty"] = cal
            res["config_calibrated_uncertainty"] = float(cal.mean())
        return res

    def predict_frames(
        self, frames: Sequence[Atoms], batch_size: int = 8, progress: bool = False, where: str = "frames"
    ) -> list[dict[str, np.ndarray | float]]:
        """Unbiased predictions for many frames in batches; one dict (calculator keys) per frame.

        `where` names the frames in errors (e.g. the file they came from)."""
        graphs = frames_to_graphs(frames, self.model, where)
        preds = predict_graphs(self.model, graphs, batch_size=batch_size, progress=progress)
        return [self._add_calibrated(p) for p in preds]


def unpack_results(out: dict[str, torch.Tensor], g: Graph, biased: Sequence[bool]) -> list[dict]:
    """Per-frame calculator results of one model `predict` over batch `g`; frames with
    `biased[k]` also get ``energy_bias`` and ``forces_bias``; a stress pass adds ``stress``
    (and ``stress_bias`` for biased frames), Voigt 6."""
    results = split_outputs(out, g)
    voigt = {key: [full_3x3_to_voigt_6_stress(m) for m in out[key].detach().to("cpu", torch.float64).numpy()]
             for key in ("stress", "stress_bias") if key in out}
    if any(biased):
        counts = torch.bincount(g.batch, minlength=g.n_graphs).tolist()
        e_bias = out["energy_bias"].detach().cpu().tolist()
        f_bias = torch.split(out["forces_bias"].detach().to("cpu", torch.float64), counts)
    for k, res in enumerate(results):
        res["free_energy"] = res["energy"]
        if "stress" in voigt:
            res["stress"] = voigt["stress"][k]
        if biased[k]:
            res["energy_bias"] = float(e_bias[k])
            res["forces_bias"] = f_bias[k].numpy()
            if "stress_bias" in voigt:
                res["stress_bias"] = voigt["stress_bias"][k]
    return results
