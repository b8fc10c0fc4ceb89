"""A walker's files: the streamed log and candidate files, the restart point, the log's columns
and statistics (one copy for the ASE engine, `walker.run_trajectory`, and the device engine,
`device.DeviceEngine`).

* ``<name>.csv``    one row per sane step (`LOG_COLUMNS`, `log_row`);
* ``<name>.extxyz`` candidate frames (`write_candidate`), unlabelled, with the model's σ;
* ``<name>.restart.npz`` the restart point (`WalkerFiles.save_restart`, eip_al/mdstate.py).

The first two are streamed to ``*.part`` files and renamed when the walker ends.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
from ase import Atoms
from ase.io.extxyz import write_extxyz

from eip_al.io import frame_id
from eip_al.mdstate import MDState, load_md_state, save_md_state

LOG_COLUMNS = ("step", "time_fs", "energy", "energy_bias", "sigma", "sigma_max", "temperature", "bias_ratio",
               "bias_ratio_median", "bias_ratio_max", "volume", "density")



FrameValues = tuple[float, float, float, float, float, float, float]


def frame_values(results: dict) -> FrameValues:
    """(E, E_bias, σ, max σ_i, |F̃_b|/|F|, median and max over atoms of |F̃_b,i|/|F_i|) of a
    calculator's results; an unbiased model has 0 bias."""
    sigma_atom = np.asarray(results["uncertainty"])
    return (
        float(results["energy"]),
        float(results.get("energy_bias", 0.0)),
        float(results["config_uncertainty"]),
        float(np.max(sigma_atom)) if sigma_atom.size else math.nan,
        float(results.get("bias_ratio", 0.0)),
        float(results.get("bias_ratio_median", 0.0)),
        float(results.get("bias_ratio_max", 0.0)),
    )


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


class WalkerFiles:
    """A walker's log and candidate files, streamed to ``*.part`` files and renamed when it
    ends, and its restart point (one copy for the ASE and the device engine).

    `open` resumes from a restart point that belongs to this walker (same key) and whose
    files are intact, truncating the files to it, or starts new files; `step`,
    `n_candidates` and `wall_before` then say where the walker stands."""

    def __init__(self, log_path: Path, frames_path: Path, restart_path: Path | None, restart_key: str):
        self.log_path, self.frames_path, self.restart_path, self.key = log_path, frames_path, restart_path, restart_key
        self.log_part, self.frames_part = _part(log_path), _part(frames_path)
        self.step, self.n_candidates, self.wall_before = 0, 0, 0.0
        self.log: IO[str] | None = None
        self.frames: IO[str] | None = None

    def open(self, atoms: Atoms, rng: np.random.Generator) -> MDState | None:
        """Open the files; on resume also put the restart point's positions, momenta, cell
        and RNG state into `atoms` and `rng` and return it (None: a new start)."""
        self.log_part.parent.mkdir(parents=True, exist_ok=True)
        restart = self._matching_restart()
        if restart is not None:
            meta = restart.meta
            for part, size in ((self.log_part, meta["log_bytes"]), (self.frames_part, meta["frames_bytes"])):
                with open(part, "r+b") as fh:
                    fh.truncate(size)
            if restart.cell is not None:
                atoms.set_cell(restart.cell, scale_atoms=False)
            atoms.set_positions(restart.positions)
            atoms.set_momenta(restart.momenta)
            rng.bit_generator.state = meta["rng_state"]
            self.step, self.n_candidates = int(meta["step"]), int(meta["n_candidates"])
            self.wall_before = float(meta["wall_time_s"])
        else:
            self.log_part.write_text(",".join(LOG_COLUMNS) + "\n")
            self.frames_part.write_bytes(b"")
        self.log, self.frames = open(self.log_part, "a"), open(self.frames_part, "a")
        return restart

    def _matching_restart(self) -> MDState | None:
        if not self.log_part.is_file() or not self.frames_part.is_file():
            return None
        state = load_md_state(self.restart_path, self.key)
        if state is None:
            return None
        meta = state.meta
        if self.log_part.stat().st_size < meta["log_bytes"] or self.frames_part.stat().st_size < meta["frames_bytes"]:
            return None
        return state

    def save_restart(self, atoms: Atoms, rng: np.random.Generator, wall_s: float,
                     state: dict[str, np.ndarray] | None = None) -> None:
        """A restart point at the current step (files flushed first, so their sizes hold)."""
        assert self.log is not None and self.frames is not None and self.restart_path is not None
        meta = {
            "key": self.key, "step": self.step, "n_candidates": self.n_candidates,
            "log_bytes": _size(self.log), "frames_bytes": _size(self.frames),
            "rng_state": rng.bit_generator.state, "wall_time_s": self.wall_before + wall_s,
        }
        save_md_state(self.restart_path, atoms, meta, state)

    def close(self) -> None:
        """Close the files (an interrupted walker keeps them and its restart point)."""
        for fh in (self.log, self.frames):
            if fh is not None:
                fh.close()
        self.log = self.frames = None

    def finish(self) -> None:
        """Close and rename the files to their final names; the restart point goes."""
        self.close()
        os.replace(self.log_part, self.log_path)
        os.replace(self.frames_part, self.frames_path)
        if self.restart_path is not None and self.restart_path.exists():
            self.restart_path.unlink()


def _size(fh: IO) -> int:
    fh.flush()
    return os.fstat(fh.fileno()).st_size


def log_row(k: int, dt_fs: float, values: FrameValues, temperature: float, volume: float, density: float) -> str:
    """The log line of step `k` (`LOG_COLUMNS`; floats as repr, so nothing is rounded)."""
    energy, e_bias, sigma, sigma_max, ratio, r_med, r_max = values
    return (f"{k},{k * dt_fs!r},{energy!r},{e_bias!r},{sigma!r},{sigma_max!r},"
            f"{temperature!r},{ratio!r},{r_med!r},{r_max!r},{volume!r},{density!r}\n")


def write_candidate(
    fh: IO,
    atoms: Atoms,
    res: dict,
    info: dict[str, object],
    *,
    step: int,
    time_fs: float,
    temperature: float,
    values: FrameValues,
) -> None:
    """Append one unlabelled candidate frame (model predictions only as info/arrays)."""
    energy, e_bias, sigma, sigma_max, ratio = values[:5]
    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info.update(info)
    frame.info.update(
        frame_id=frame_id(frame), step=step, time_fs=time_fs, temperature_K=temperature,
        config_uncertainty=sigma, sigma_max=sigma_max, energy_pred=energy, energy_bias=e_bias,
        bias_ratio=ratio, unphysical=False,
    )
    frame.arrays["uncertainty"] = np.asarray(res["uncertainty"], dtype=np.float64)
    frame.arrays["uncertainty_components"] = np.asarray(res["uncertainty_components"], dtype=np.float64)
    frame.arrays["aleatoric_components"] = np.asarray(res["aleatoric_components"], dtype=np.float64)
    write_extxyz(fh, [frame])


def log_statistics(log_csv: Path, biased: bool) -> dict[str, float | None]:
    """σ, energy, bias-ratio (biased walkers) and density statistics over a walker log (None
    when it has no rows, or no finite density)."""
    df = pd.read_csv(log_csv)
    if df.empty:
        return {"sigma_mean": None, "sigma_max": None, "energy_mean": None, "energy_std": None,
                "bias_ratio_mean": None, "bias_ratio_median": None, "bias_ratio_max": None,
                "density_mean": None, "density_min": None, "density_max": None}

    def finite(col: str) -> np.ndarray:
        v = df[col].to_numpy(dtype=np.float64) if col in df.columns else np.zeros(0)
        return v[np.isfinite(v)]

    ratio, r_med, r_max = finite("bias_ratio"), finite("bias_ratio_median"), finite("bias_ratio_max")
    rho = finite("density")
    return {
        "sigma_mean": float(df["sigma"].mean()),
        "sigma_max": float(df["sigma"].max()),
        "energy_mean": float(df["energy"].mean()),
        "energy_std": float(df["energy"].std(ddof=0)),
        "bias_ratio_mean": float(ratio.mean()) if biased and ratio.size else None,
        "bias_ratio_median": float(np.median(r_med)) if biased and r_med.size else None,
        "bias_ratio_max": float(r_max.max()) if biased and r_max.size else None,
        "density_mean": float(rho.mean()) if rho.size else None,
        "density_min": float(rho.min()) if rho.size else None,
        "density_max": float(rho.max()) if rho.size else None,
    }
