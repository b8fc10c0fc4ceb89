"""The device engine (`explore.engine: device`): all walkers of a generation as one torch state.

The ASE engine keeps positions on the host: every step builds the neighbor list there,
copies the graph to `explore.device` and the forces back, and runs the integrator in numpy.
Here positions, momenta and forces stay on the device: each walker's neighbor list is a
vesin-torch list with a Verlet skin (rebuilt only when an atom moved more than skin/2), the
velocity-Verlet update of NVT Berendsen or Langevin (ASE's formulas, same order) runs in
torch, and one model pass serves every walker (one graph, one bias per walker, the UDD
limiter in torch). Per step one device→host copy brings back what the log row and the
collapse rules need (energies, σ, temperature, positions, forces); the rules themselves are
the ASE engine's `CollapseDetector`, so both engines stop a walker at the same frame. Candidate
frames (every `sample_every` steps) and restart points copy their extra arrays only then.
Langevin noise is drawn from the walker's own numpy RNG (as ASE draws it) and copied to the
device, so a walker resumes exactly and matches the ASE engine.

Files, restart points and results are the ASE engine's (`WalkerFiles`, `log_row`,
`write_candidate`, `WalkerJob.result`): a run can switch engines between generations. In
float64 a walker follows the ASE engine's trajectory up to float rounding
(tests/test_explore_device.py); the restart key records the engine, so a restart point is
only resumed by the engine that wrote it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import vesin_torch
from ase import units

from eip_al.calculator import EIPCalculator
from eip_al.config import DEVICE_INTEGRATORS, UDDConfig
from eip_al.explore.collapse import CollapseDetector
from eip_al.explore.files import FrameValues, WalkerFiles, log_row, write_candidate
from eip_al.explore.udd import limit_bias_forces, make_bias
from eip_al.explore.walker import TrajectoryOutcome, WalkerJob, start_line
from eip_al.model.eip import BiasFn
from eip_al.model.neighbors import Graph, SpeciesMap
from eip_al.progress import Throttle, say
from eip_al.schemas import ExplorationResult
from eip_al.systems import density_g_cm3

SKIN_A = 0.5  # Verlet skin of the device neighbor lists (Å), as the ASE engine's calculator


@dataclass
class _Pass:
    """One model pass over the running walkers, still on the device."""

    out: dict[str, torch.Tensor]
    starts: list[int]  # first atom of each walker in the batch


class DeviceWalker:
    """One walker on the device: its tensors, integrator, bias, files and collapse rules."""

    def __init__(self, job: WalkerJob, model: torch.nn.Module, species: SpeciesMap):
        wc = job.plan.config
        if wc.thermostat not in DEVICE_INTEGRATORS:
            raise ValueError(f"{job.plan.name}: the device engine integrates {', '.join(DEVICE_INTEGRATORS)} "
                             f"walkers, not {wc.thermostat}")
        self.job, self.wc, self.label = job, wc, job.label
        self.device = model.device
        atoms = job.atoms
        self.rng = job.thermostat_rng()
        log_csv, frames_xyz, restart = job.paths
        self.files = WalkerFiles(log_csv, frames_xyz, restart, job.restart_key)
        self.resumed = self.files.open(atoms, self.rng) is not None
        self.atoms = atoms
        self.detector = CollapseDetector(job.collapse, atoms, wc.temperature_K, screen=job.screen)
        self.info = job.frame_info
        self.periodic = bool(atoms.pbc.all())
        self.volume = float(atoms.get_volume()) if self.periodic else math.nan
        self.density = density_g_cm3(float(atoms.get_masses().sum()), self.volume) if self.periodic else math.nan
        self.n = len(atoms)

        f64 = dict(device=self.device, dtype=torch.float64)
        self.x = torch.tensor(atoms.positions, **f64)
        self.p = torch.tensor(atoms.get_momenta(), **f64)
        self.m = torch.tensor(atoms.get_masses(), **f64).unsqueeze(1)
        self.cell = torch.tensor(atoms.cell.array, **f64)
        pbc = [bool(v) for v in atoms.pbc]  # vesin-torch: one bool, or three as a tensor
        self.pbc: bool | torch.Tensor = pbc[0] if len(set(pbc)) == 1 else torch.tensor(pbc, device=self.device)
        self.species = torch.from_numpy(species(atoms.numbers, job.label)).to(self.device)
        self.nl = vesin_torch.NeighborList(cutoff=float(model.spec.cutoff), full_list=True, skin=SKIN_A)
        self.forces: torch.Tensor | None = None  # what the integrator sees (model + limited bias)

        self.dt = wc.timestep_fs * units.fs
        self.dt_fs = wc.timestep_fs
        self.udd = UDDConfig(**job.bias.settings) if job.bias.biased else None
        self.bias: BiasFn | None = make_bias(self.udd) if self.udd is not None else None
        if wc.thermostat == "langevin":
            self._langevin_constants()
        self.collapse_step: int | None = None
        self.reason: str | None = None
        self.error: BaseException | None = None
        self.running = True
        self.t_start = time.perf_counter()
        self.wall_s = math.nan  # set when it stops

    # ------------------------------------------------------------------ integrators (ASE's order)
    def temperature(self) -> torch.Tensor:
        """Kinetic temperature (K) over 3N degrees of freedom, as `Atoms.get_temperature`."""
        ekin = 0.5 * torch.sum(self.p * (self.p / self.m))
        return 2.0 * ekin / (3 * self.n * units.kB)

    def first_half(self) -> None:
        """Everything of one step before the new forces: thermostat, half kick, drift."""
        assert self.forces is not None
        if self.wc.thermostat == "berendsen":  # ase.md.nvtberendsen.NVTBerendsen.step (fixcm=True)
            tautscl = self.dt / (self.wc.tau_fs * units.fs)
            scl = torch.sqrt(1.0 + (self.wc.temperature_K / self.temperature() - 1.0) * tautscl).clamp(0.9, 1.1)
            p = scl * self.p
            p = p + 0.5 * self.dt * self.forces
            p = p - p.sum(dim=0) / float(self.n)
            self.x = self.x + self.dt * p / self.m
            self.p = p
        else:  # ase.md.langevin.Langevin.step (fixcm=False)
            xi = torch.from_numpy(self.rng.standard_normal(size=(self.n, 3))).to(self.device)
            eta = torch.from_numpy(self.rng.standard_normal(size=(self.n, 3))).to(self.device)
            self.rnd_pos = self.c5 * eta
            self.rnd_vel = self.c3 * xi - self.c4 * eta
            v = self.p / self.m
            v = v + (self.c1 * self.forces / self.m - self.c2 * v + self.rnd_vel)
            x = self.x
            self.x = x + self.dt * v + self.rnd_pos
            self.v = (self.x - x - self.rnd_pos) / self.dt

    def second_half(self, forces: torch.Tensor) -> None:
        """The half kick with the forces at the new positions."""
        self.forces = forces
        if self.wc.thermostat == "berendsen":
            self.p = self.p + 0.5 * self.dt * forces
        else:
            v = self.v + (self.c1 * forces / self.m - self.c2 * self.v + self.rnd_vel)
            self.p = v * self.m

    def _langevin_constants(self) -> None:
        dt, fr = self.dt, self.wc.friction_per_fs / units.fs
        sigma = torch.sqrt(2 * (self.wc.temperature_K * units.kB) * fr / self.m)
        self.c1 = dt / 2.0 - dt * dt * fr / 8.0
        self.c2 = dt * fr / 2 - dt * dt * fr * fr / 8.0
        self.c3 = math.sqrt(dt) * sigma / 2.0 - dt**1.5 * fr * sigma / 8.0
        self.c5 = dt**1.5 * sigma / (2 * math.sqrt(3))
        self.c4 = fr / 2.0 * self.c5

    # ------------------------------------------------------------------ one frame's results
    def forces_of(self, p: _Pass, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(integrated forces F + F̃_b, limited bias forces F̃_b) of walker `k` of pass `p`."""
        sl = slice(p.starts[k], p.starts[k] + self.n)
        f = p.out["forces"][sl].to(torch.float64)
        if self.udd is None:
            return f, torch.zeros_like(f)
        raw = p.out["forces_bias"][sl].to(torch.float64)
        limited = limit_bias_forces(raw, self.udd.C, self.udd.D) if self.udd.limiter else raw
        return f + limited, limited

    def stats(self, p: _Pass, k: int, total: torch.Tensor, limited: torch.Tensor) -> torch.Tensor:
        """[E, E_bias, σ, max σ_i, |F̃_b|/|F|, median and max of |F̃_b,i|/|F_i|, T] (float64)."""
        sl = slice(p.starts[k], p.starts[k] + self.n)
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        model_f = total - limited
        if self.udd is None:
            ratio = r_med = r_max = zero
        else:  # eip_al.explore.udd.bias_force_ratio and atom_bias_ratios
            num, den = torch.linalg.norm(limited), torch.linalg.norm(model_f)
            ratio = torch.where(den > 0, num / den.clamp_min(1e-300), torch.where(num > 0, math.inf, 0.0))
            fb, f = torch.linalg.norm(limited, dim=1), torch.linalg.norm(model_f, dim=1)
            r = fb[f > 0] / f[f > 0]
            r_med = torch.quantile(r, 0.5) if r.numel() else zero  # = np.median
            r_max = r.max() if r.numel() else zero
        e_bias = p.out["energy_bias"][k].to(torch.float64) if self.udd is not None else zero
        return torch.stack([
            p.out["energy"][k].to(torch.float64), e_bias, p.out["sigma_config"][k].to(torch.float64),
            p.out["sigma_atom"][sl].max().to(torch.float64), ratio, r_med, r_max, self.temperature(),
        ])

    def record(self, k: int, row: np.ndarray, positions: np.ndarray, forces: np.ndarray,
               sigma_atom: np.ndarray, p: _Pass, index: int) -> bool:
        """Check and log step `k` from its host copies; False when the walker collapsed."""
        values: FrameValues = tuple(float(v) for v in row[:7])  # type: ignore[assignment]
        temperature = float(row[7])
        why = self.detector.check(positions, values[0], forces, sigma_atom, temperature)
        if why is not None:
            self.collapse_step, self.reason = k, why
            say("explore", f"{self.label}: collapsed at step {k} ({k * self.dt_fs:g} fs): {why}")
            return False
        files = self.files
        assert files.log is not None and files.frames is not None
        files.log.write(log_row(k, self.dt_fs, values, temperature, self.volume, self.density))
        if k > 0 and k % self.wc.sample_every == 0:
            self.atoms.set_positions(positions)
            sl = slice(p.starts[index], p.starts[index] + self.n)
            res = {key: p.out[name][sl].detach().to("cpu", torch.float64).numpy() for key, name in (
                ("uncertainty", "sigma_atom"), ("uncertainty_components", "sigma_components"),
                ("aleatoric_components", "aleatoric_components"))}
            write_candidate(files.frames, self.atoms, res, self.info, step=k, time_fs=k * self.dt_fs,
                            temperature=temperature, values=values)
            files.n_candidates += 1
        return True

    def save_restart(self) -> None:
        """A restart point of the current step (positions and momenta copied to the host)."""
        self.atoms.set_positions(self.x.cpu().numpy())
        self.atoms.set_momenta(self.p.cpu().numpy())
        self.files.save_restart(self.atoms, self.rng, time.perf_counter() - self.t_start)

    def stop(self, error: BaseException | None = None) -> None:
        """Leave the batch: finished or collapsed (files renamed), or failed (files kept)."""
        self.running = False
        if error is not None:
            self.error = error
            self.files.close()
            return
        self.wall_s = self.files.wall_before + time.perf_counter() - self.t_start
        self.files.finish()
        say("explore", f"{self.label}: {'collapsed' if self.collapse_step is not None else 'finished'} after "
                       f"{self.files.step} steps, {self.files.n_candidates} candidates, {self.wall_s:.1f} s")

    def outcome(self) -> ExplorationResult:
        """The result of a walker that stopped without error (its own wall time, not the batch's)."""
        return self.job.result(TrajectoryOutcome(self.files.step, self.collapse_step, self.reason,
                                                 self.files.n_candidates, self.wall_s))


def _still_running(walkers: Sequence[DeviceWalker]) -> list[DeviceWalker]:
    """`walkers` without those that stopped; a walker at its last step stops here."""
    for w in walkers:
        if w.running and w.files.step >= w.wc.steps:
            w.stop()
    return [w for w in walkers if w.running]


class DeviceEngine:
    """Walkers advancing together on one model (its device and precision)."""

    def __init__(self, template: EIPCalculator):
        self.model = template.model
        self.species = SpeciesMap(template.model.spec.elements)

    def run(self, jobs: Sequence[WalkerJob]) -> list[ExplorationResult | BaseException]:
        """Integrate every job to its end (or collapse); each walker's result or its error, in order.
        A walker whose files fail stops alone; a failed model pass stops every walker still running."""
        walkers = [DeviceWalker(job, self.model, self.species) for job in jobs]
        for w in walkers:
            say("explore", f"{w.label}: {start_line(w.wc, w.files.step if w.resumed else None)} [device engine]")
        lines = Throttle(wait_first=True)
        try:
            running = list(walkers)
            # the forces to start from; a resumed walker logged its restart step already
            self._after_pass(running, self._pass(running), log=[not w.resumed for w in running])
            running = _still_running(running)
            while running:
                for w in running:
                    w.first_half()
                self._after_pass(running, self._pass(running), log=[True] * len(running), advance=True)
                running = _still_running(running)
                if running and lines.due():
                    say("explore", "device engine: " + ", ".join(
                        f"{w.job.plan.name} {w.files.step}/{w.wc.steps}" for w in running))
        except Exception as exc:  # the model pass failed: every walker still running stops with it
            for w in walkers:
                if w.running:
                    w.stop(exc)
        return [w.error if w.error is not None else w.outcome() for w in walkers]

    def _pass(self, walkers: Sequence[DeviceWalker]) -> _Pass:
        """One model pass over `walkers`' current positions (their neighbor lists updated)."""
        model = self.model
        dtype = model.dtype
        starts, edges_i, edges_j, shifts, offset = [], [], [], [], 0
        for w in walkers:
            i, j, s = w.nl.compute(w.x, w.cell, w.pbc, "ijS")
            starts.append(offset)
            edges_i.append(i.to(torch.long) + offset)
            edges_j.append(j.to(torch.long) + offset)
            shifts.append(s)
            offset += w.n
        device = model.device
        g = Graph(
            species=torch.cat([w.species for w in walkers]),
            positions=torch.cat([w.x for w in walkers]).to(dtype),
            cell=torch.stack([w.cell for w in walkers]).to(dtype),
            edge_i=torch.cat(edges_i), edge_j=torch.cat(edges_j),
            shifts=torch.cat(shifts).to(dtype),
            batch=torch.cat([torch.full((w.n,), k, dtype=torch.long, device=device) for k, w in enumerate(walkers)]),
            n_graphs=len(walkers),
        )
        with torch.enable_grad():
            out = model.predict(g, bias=[w.bias for w in walkers])
        return _Pass(out, starts)

    def _after_pass(self, walkers: Sequence[DeviceWalker], p: _Pass, log: Sequence[bool],
                    advance: bool = False) -> None:
        """Forces into each walker (second half kick when `advance`), then one host copy of
        what the logs and collapse rules need, then each walker's check, log and files."""
        rows, host = [], []
        for k, w in enumerate(walkers):
            total, limited = w.forces_of(p, k)
            if advance:
                w.second_half(total)
            else:
                w.forces = total
            sl = slice(p.starts[k], p.starts[k] + w.n)
            rows.append(w.stats(p, k, total, limited))
            host.append(torch.cat([w.x.flatten(), total.flatten(), p.out["sigma_atom"][sl].to(torch.float64)]))
        flat = torch.cat([torch.stack(rows).flatten(), *host]).detach().cpu().numpy()
        table, at = flat[: 8 * len(walkers)].reshape(len(walkers), 8), 8 * len(walkers)
        for k, w in enumerate(walkers):
            chunk = flat[at: at + 7 * w.n]
            at += 7 * w.n
            if not log[k]:
                continue
            try:
                if advance:
                    w.files.step += 1
                ok = w.record(w.files.step, table[k], chunk[: 3 * w.n].reshape(w.n, 3),
                              chunk[3 * w.n: 6 * w.n].reshape(w.n, 3), chunk[6 * w.n:], p, k)
                if not ok:
                    w.stop()
                    continue
                step = w.files.step
                if advance and step % w.job.restart_every == 0 and step < w.wc.steps:
                    w.save_restart()
            except Exception as exc:  # this walker's files failed; the others go on
                w.stop(exc)
