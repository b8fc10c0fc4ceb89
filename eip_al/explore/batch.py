"""Batched walker replicas: the walkers of a generation advance together, one model pass per step.

Every walker keeps its own ASE integrator, thermostat RNG, collapse detector, restart file,
log and candidate file: it runs `run_trajectory` unchanged in its own greenlet. Only the
model evaluation is shared: each walker's `ReplicaCalculator` hands its graph to the
`ReplicaBatch` and yields; when every running walker has handed one in, the batch collates
them, runs one forward pass and one backward pass (with each walker's own UDD bias or
none) and gives each walker its frame's results. A walker that finishes, collapses or
fails leaves the batch, and the rest carry on without it.

Frames in one batch do not interact (the graph is block diagonal and each walker's
energy, σ and bias depend only on its own atoms), so a batched walker integrates the same
trajectory as it would alone, up to float rounding of the batched matrix products
(tests/test_explore_batch.py compares both). The python work of the integrators, collapse
checks and logs still runs one walker at a time; only the model pass is shared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import greenlet
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from eip_al.calculator import EIPCalculator, unpack_results
from eip_al.config import ALConfig
from eip_al.explore.device import DeviceEngine
from eip_al.explore.walker import (
    explore_batched,
    explore_dtype,
    prepare_walker,
    walker_checkpoint,
    walker_names,
)
from eip_al.integrity import run_step
from eip_al.model.eip import BiasFn
from eip_al.model.neighbors import Graph, collate
from eip_al.rundir import RunDir, load_valid
from eip_al.schemas import ExplorationResult, ExplorationSummary

T = TypeVar("T")


class ReplicaBatch:
    """One shared model that evaluates the frames of several walkers in one pass.

    `run` runs each walker in its own greenlet (cooperative, all on the calling thread):
    a replica's evaluation hands its frame in and yields; once every running walker waits,
    one pass serves them all and each resumes with its results. Greenlets rather than
    threads: no lock handoffs or OS scheduling per step, all model work on one thread,
    and a fixed, reproducible order. Outside `run` (e.g. while a UDD amplitude is scaled)
    a replica evaluates alone.
    """

    def __init__(self, template: EIPCalculator):
        self.template = template
        self._members: set[int] = set()
        self._pending: dict[int, tuple[Graph, BiasFn | None, bool]] = {}
        self._hub: greenlet.greenlet | None = None
        self._slots = 0
        self.rounds = 0  # passes so far
        self.frames = 0  # frames evaluated in them

    def calculator(self) -> ReplicaCalculator:
        """A new replica: an `EIPCalculator` on the shared model with its own neighbor list."""
        self._slots += 1
        return ReplicaCalculator(self, self._slots - 1)

    def evaluate(self, slot: int, g: Graph, bias: BiasFn | None, stress: bool = False) -> dict:
        """Results of frame `g` (CPU graph) for replica `slot` (calculator keys); with the
        stress when `stress` (then the whole pass computes it: NPT and NVT walkers share it)."""
        if slot not in self._members or self._hub is None:
            return self._evaluate({slot: (g, bias, stress)})[slot]
        self._pending[slot] = (g, bias, stress)
        return self._hub.switch()  # resumed by `run` with the results, or thrown the pass's error

    def _evaluate(self, pending: dict[int, tuple[Graph, BiasFn | None, bool]]) -> dict[int, dict]:
        """One pass over the pending frames (in slot order): one collate, one transfer."""
        slots = sorted(pending)
        model = self.template.model
        g = collate([pending[k][0] for k in slots]).to(model.device, model.dtype)
        biases = [pending[k][1] for k in slots]
        with torch.enable_grad():
            out = model.predict(g, bias=biases, stress=any(pending[k][2] for k in slots))
        self.rounds += 1
        self.frames += len(slots)
        return dict(zip(slots, unpack_results(out, g, [b is not None for b in biases]), strict=True))

    def run(self, work: Sequence[tuple[ReplicaCalculator, Callable[[], T]]]) -> list[T | BaseException]:
        """Call each function with its replica's evaluations batched with the others';
        returns each call's value or the Exception it raised, in order. KeyboardInterrupt
        and other BaseExceptions stop the whole batch."""
        outcomes: list[Any] = [None] * len(work)
        lets = {calc.slot: (k, greenlet.greenlet(fn)) for k, (calc, fn) in enumerate(work)}
        resume: dict[int, Any] = dict.fromkeys(lets)  # what each waiting walker gets next
        self._hub, self._members = greenlet.getcurrent(), set(lets)
        try:
            while resume:
                for slot in sorted(resume):
                    k, let = lets[slot]
                    value = resume.pop(slot)
                    try:
                        if isinstance(value, Exception):
                            ret = let.throw(value)
                        else:
                            ret = let.switch(value) if let else let.switch()
                    except Exception as exc:  # this walker failed; the others carry on
                        outcomes[k] = exc
                        self._members.discard(slot)
                        continue
                    if let.dead:
                        outcomes[k] = ret
                        self._members.discard(slot)
                pending, self._pending = self._pending, {}
                if pending:
                    try:
                        resume = dict(self._evaluate(pending))
                    except Exception as exc:  # every walker of this pass sees the failure
                        resume = dict.fromkeys(pending, exc)
        finally:
            self._hub, self._members, self._pending = None, set(), {}
        return outcomes


class ReplicaCalculator(EIPCalculator):
    """An `EIPCalculator` whose model evaluations go through a `ReplicaBatch` (same results)."""

    def __init__(self, batch: ReplicaBatch, slot: int, **kwargs: Any):
        self._share(batch.template)
        self.batch, self.slot = batch, slot
        Calculator.__init__(self, **kwargs)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        Calculator.calculate(self, atoms, properties, system_changes)
        stress = self.wants_stress(properties)
        self.results = self._add_calibrated(self.batch.evaluate(self.slot, self.graph(self.atoms), self.bias, stress))


def run_walkers(cfg: ALConfig, run: RunDir, gen: int, names: Sequence[str]) -> list[ExplorationResult]:
    """Walkers `names` of generation `gen`, each result written to ``explore/<name>.json``;
    finished ones are loaded, not rerun. Batched (`explore_batched`) the others advance together
    on one model: as one torch state (`DeviceEngine`, `explore.engine: device`) or as ASE
    walkers sharing each model pass (`ReplicaBatch`); otherwise one after another. A batched walker that fails
    does not stop the others; the first failure is raised once all have ended."""
    out = run.step_dir(gen, "explore")
    paths = {name: out / f"{name}.json" for name in names}

    def step(name: str, produce: Callable[[], ExplorationResult]) -> ExplorationResult:
        return run_step(paths[name], ExplorationResult, produce, run)[0]

    if not explore_batched(cfg):
        return [step(name, lambda name=name: prepare_walker(cfg, run, gen, name)()) for name in names]
    results: dict[str, ExplorationResult | BaseException] = {}
    todo = [name for name in names if load_valid(paths[name], ExplorationResult) is None]
    if todo:
        template = EIPCalculator(walker_checkpoint(run, gen), device=cfg.explore.device, dtype=explore_dtype(cfg),
                                 compile=cfg.explore.compile)
        if cfg.explore.engine == "device":
            jobs = [prepare_walker(cfg, run, gen, name, base=EIPCalculator.sharing(template)) for name in todo]
            done = DeviceEngine(template).run(jobs)
            for name, res in zip(todo, done, strict=True):
                results[name] = res if isinstance(res, BaseException) else step(name, lambda res=res: res)
        else:
            batch = ReplicaBatch(template)
            work = []
            for name in todo:
                calc = batch.calculator()
                job = prepare_walker(cfg, run, gen, name, base=calc)
                work.append((calc, lambda name=name, job=job: step(name, job)))
            results = dict(zip(todo, batch.run(work), strict=True))
        failed = [r for r in results.values() if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
    return [results[name] if name in results else step(name, _finished) for name in names]  # type: ignore[misc]


def _finished() -> ExplorationResult:
    raise AssertionError("a finished walker's result is loaded, never produced")


def explore_generation(cfg: ALConfig, run: RunDir, gen: int) -> ExplorationSummary:
    """All walkers of generation `gen` (`run_walkers`). Returns the summary (the caller writes it)."""
    return ExplorationSummary(generation=gen, walkers=run_walkers(cfg, run, gen, walker_names(cfg)))
