"""Uncertainty-driven dynamics (UDD, docs/eip-method §5): bias energies, limiter, calculator.

The bias lowers the potential energy where the model is uncertain, so biased MD drifts
towards configurations worth labelling. Two forms of E_bias(σ) are implemented
(σ = configuration uncertainty, N = number of atoms):

* ``reference`` (the authors' code):  A · [exp(−σ / (N·B)) − 1]
* ``kulichenko`` (Kulichenko et al. 2023): A · [exp(−σ² / (2B²)) − 1]

Bias forces F_b = −∂E_bias/∂R come from the same forward pass and the same (batched)
backward pass as the model forces (`EIPCalculator`'s bias hook). The Gaussian limiter
F̃_b = F_b · D · exp(−F_b² / (2C²)) / (2πC²) acts per force component and keeps large bias
forces from destabilising the integrator. The MD integrator sees F + F̃_b; the unbiased
energy E, E_bias and σ are reported separately because F + F̃_b is not the gradient of
any reported energy (no energy conservation is claimed for biased runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from eip_al.calculator import EIPCalculator
from eip_al.config import UDDConfig
from eip_al.model.eip import BiasFn


def reference_bias(A: float, B: float) -> BiasFn:
    """E_bias = A·[exp(−σ/(N·B)) − 1] (the authors' code form)."""
    _check_ab(A, B)

    def bias(sigma: torch.Tensor, n_atoms: int) -> torch.Tensor:
        return A * (torch.exp(-sigma / (n_atoms * B)) - 1.0)

    return bias


def kulichenko_bias(A: float, B: float) -> BiasFn:
    """E_bias = A·[exp(−σ²/(2B²)) − 1] (Kulichenko et al.; strongest force where σ ≈ B)."""
    _check_ab(A, B)

    def bias(sigma: torch.Tensor, n_atoms: int) -> torch.Tensor:
        return A * (torch.exp(-(sigma**2) / (2.0 * B**2)) - 1.0)

    return bias


def _check_ab(A: float, B: float) -> None:
    if not (math.isfinite(A) and A >= 0):
        raise ValueError(f"UDD A must be a finite number >= 0 (got {A})")
    if not (math.isfinite(B) and B > 0):
        raise ValueError(f"UDD B must be a finite number > 0 (got {B})")


def make_bias(udd: UDDConfig) -> BiasFn:
    """The bias function of the configured form with its A and B."""
    if udd.form == "reference":
        return reference_bias(udd.A, udd.B)
    if udd.form == "kulichenko":
        return kulichenko_bias(udd.A, udd.B)
    raise ValueError(f"unknown UDD bias form {udd.form!r} (expected 'reference' or 'kulichenko')")


def limit_bias_forces(forces_bias: np.ndarray | torch.Tensor, C: float, D: float) -> np.ndarray | torch.Tensor:
    """Gaussian limiter per component: F̃_b = F_b · D · exp(−F_b²/(2C²)) / (2πC²).

    Small bias forces are scaled by D/(2πC²); the output peaks at |F_b| = C with
    D·e^{−1/2}/(2πC) and decays to zero for |F_b| ≫ C. A tensor stays a tensor on its
    device (the device engine); anything else becomes a float64 array.
    """
    if not (C > 0 and D > 0):
        raise ValueError(f"limiter needs C > 0 and D > 0 (got C={C}, D={D})")
    if isinstance(forces_bias, torch.Tensor):
        fb, exp = forces_bias, torch.exp
    else:
        fb, exp = np.asarray(forces_bias, dtype=np.float64), np.exp
    return fb * (D / (2.0 * math.pi * C * C)) * exp(-(fb * fb) / (2.0 * C * C))


def bias_force_ratio(forces_bias: np.ndarray, forces: np.ndarray) -> float:
    """|F̃_b|/|F|: Frobenius norm of the (limited) bias forces over that of the model forces.

    Both norms run over all atoms and components, so the ratio is the RMS bias force over
    the RMS physical force (Kulichenko et al. tuned B for a ratio of about 0.36).
    Returns inf when the model forces vanish but the bias does not, 0 when both vanish.
    """
    num = float(np.linalg.norm(forces_bias))
    den = float(np.linalg.norm(forces))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def atom_bias_ratios(forces_bias: np.ndarray, forces: np.ndarray) -> tuple[float, float]:
    """(median, max) over atoms of |F̃_b,i|/|F_i|: how strongly the bias pushes single atoms
    (atoms with |F_i| = 0 are left out; (0, 0) when no atom has a model force)."""
    fb = np.linalg.norm(np.asarray(forces_bias, dtype=np.float64), axis=1)
    f = np.linalg.norm(np.asarray(forces, dtype=np.float64), axis=1)
    ok = f > 0
    if not np.any(ok):
        return 0.0, 0.0
    r = fb[ok] / f[ok]
    return float(np.median(r)), float(np.max(r))


def bias_stress(stress_raw: np.ndarray, forces_raw: np.ndarray, forces_limited: np.ndarray) -> np.ndarray:
    """The stress of the (limited) bias: (1/V)·∂E_bias/∂ε scaled by the limiter's gain on this
    frame, ‖F̃_b‖/‖F_b‖ (1 without the limiter; 0 when F_b = 0).

    Without the limiter this is exact (F_b and the stress are derivatives of one E_bias). The
    limited forces are the gradient of no energy, so no exact stress exists; in the limiter's
    linear regime (|F_b| ≪ C) F̃_b = k·F_b = −∇(k·E_bias) and the scaled stress is exact
    again, beyond it an approximation with the same overall strength as the forces.
    """
    norm = float(np.linalg.norm(forces_raw))
    gain = float(np.linalg.norm(forces_limited)) / norm if norm > 0 else 0.0
    return np.asarray(stress_raw, dtype=np.float64) * gain


@dataclass(frozen=True)
class BiasScale:
    """The amplitude A that makes the median frame's |F̃_b|/|F| equal the target."""

    A: float
    target: float
    achieved: float  # median ratio over the frames at this A (below target if unreachable)
    n_frames: int


def scale_amplitude(base: EIPCalculator, udd: UDDConfig, frames: Sequence[Atoms], target: float) -> BiasScale:
    """Choose A so that the median over `frames` of `bias_force_ratio` equals `target`.

    The raw bias force is linear in A, so one model evaluation per frame at A = 1 gives
    F_b(A) = A·F_b(1); with the limiter the ratio first rises and then falls with A, so
    the smallest A that reaches the target is found on a log grid and refined by
    bisection (if the target is out of reach, the A of the largest ratio is used and
    `achieved` says what it gives). Used with the model's own training frames, one
    config gives the same bias strength for 48 or 288 atoms.
    """
    if not frames:
        raise ValueError("scaling the UDD bias needs at least one training frame")
    unit = udd.model_copy(update={"A": 1.0})
    had = base.bias
    base.bias = make_bias(unit)
    raw, model = [], []
    try:
        for atoms in frames:
            a = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
            base.calculate(a, ["energy", "forces"], all_changes)
            raw.append(np.asarray(base.results["forces_bias"], dtype=np.float64))
            model.append(np.asarray(base.results["forces"], dtype=np.float64))
    finally:
        base.bias = had

    def ratio(A: float) -> float:
        vals = [
            bias_force_ratio(limit_bias_forces(A * fb, udd.C, udd.D) if udd.limiter else A * fb, f)
            for fb, f in zip(raw, model, strict=True)
        ]
        return float(np.median(vals))

    grid = np.logspace(-6, 9, 151)
    values = np.array([ratio(float(A)) for A in grid])
    above = np.flatnonzero(values >= target)
    if above.size == 0:
        k = int(np.argmax(values))
        return BiasScale(A=float(grid[k]), target=target, achieved=float(values[k]), n_frames=len(frames))
    k = int(above[0])
    if k == 0:
        return BiasScale(A=float(grid[0]), target=target, achieved=float(values[0]), n_frames=len(frames))
    lo, hi = math.log(grid[k - 1]), math.log(grid[k])
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratio(math.exp(mid)) < target else (lo, mid)
    A = math.exp(hi)
    return BiasScale(A=A, target=target, achieved=ratio(A), n_frames=len(frames))


class UDDCalculator(Calculator):
    """An `EIPCalculator` plus the UDD bias: `forces` = F + F̃_b (what MD integrates).

    Results per frame: ``energy``/``free_energy`` (unbiased model E), ``forces``
    (F + F̃_b), ``forces_model`` (F), ``energy_bias`` (E_bias), ``forces_bias`` (F̃_b,
    after the limiter when enabled), ``forces_bias_raw`` (F_b = −∂E_bias/∂R),
    ``bias_ratio`` (|F̃_b|/|F|, see `bias_force_ratio`), ``bias_ratio_median`` and
    ``bias_ratio_max`` (over atoms of |F̃_b,i|/|F_i|), ``sigma_max`` (max_i σ_i) and
    the model's ``uncertainty``, ``uncertainty_components``, ``aleatoric_components``,
    ``config_uncertainty``, ``descriptor``. When the stress is asked for (or the base has
    ``stress=True``, NPT): ``stress`` (model + bias, what the barostat sees), ``stress_model``,
    ``stress_bias`` (see `bias_stress`) and ``stress_bias_raw``. One model evaluation per frame.
    """

    implemented_properties = [
        "energy",
        "free_energy",
        "forces",
        "forces_model",
        "energy_bias",
        "forces_bias",
        "forces_bias_raw",
        "bias_ratio",
        "bias_ratio_median",
        "bias_ratio_max",
        "sigma_max",
        "stress",
        "stress_model",
        "stress_bias",
        "stress_bias_raw",
        "uncertainty",
        "uncertainty_components",
        "aleatoric_components",
        "config_uncertainty",
        "descriptor",
    ]

    def __init__(self, base: EIPCalculator, udd: UDDConfig, **kwargs: Any):
        """Wrap `base` (which this calculator then owns: its bias hook is set here)."""
        if base.bias is not None:
            raise ValueError("the base EIPCalculator already has a bias; pass one without")
        super().__init__(**kwargs)
        self.udd = udd
        self.base = base
        base.bias = make_bias(udd)

    @classmethod
    def from_checkpoint(
        cls, checkpoint_path: Path | str, udd: UDDConfig, device: str = "auto", **eip_kwargs: Any
    ) -> UDDCalculator:
        """A UDD calculator for a model checkpoint (`eip_kwargs` go to `EIPCalculator`)."""
        return cls(EIPCalculator(checkpoint_path, device=device, **eip_kwargs), udd)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        self.base.calculate(self.atoms, ["energy", "forces", *(["stress"] if "stress" in properties else [])],
                            all_changes)
        res = dict(self.base.results)
        forces = np.asarray(res["forces"], dtype=np.float64)
        raw = np.asarray(res["forces_bias"], dtype=np.float64)
        limited = limit_bias_forces(raw, self.udd.C, self.udd.D) if self.udd.limiter else raw
        res["forces_model"] = forces
        res["forces_bias_raw"] = raw
        res["forces_bias"] = limited
        res["forces"] = forces + limited
        res["bias_ratio"] = bias_force_ratio(limited, forces)
        res["bias_ratio_median"], res["bias_ratio_max"] = atom_bias_ratios(limited, forces)
        res["sigma_max"] = float(np.max(res["uncertainty"]))
        if "stress" in res:
            res["stress_model"] = res["stress"]
            res["stress_bias_raw"] = res["stress_bias"]
            res["stress_bias"] = bias_stress(res["stress_bias"], raw, limited)
            res["stress"] = res["stress"] + res["stress_bias"]
        self.results = res
