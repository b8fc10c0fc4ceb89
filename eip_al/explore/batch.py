"""Batched walker replicas: the walkers of a generation advance together, one model pass per step.

Every walker keeps its own ASE integrator, thermostat RNG, collapse detector, restart file,
log and candidate file: it runs `run_trajectory` unchanged in its own thread. Only the
model evaluation is shared: each walker's `ReplicaCalculator` hands its graph to the
`ReplicaBatch` and waits; when every running walker has handed one in, the batch collates
them, runs one forward pass and one backward pass (with each walker's own UDD bias or
none) and gives each walker its frame's results. A walker that finishes, collapses or
fails leaves the batch, and the rest carry on without it.

Frames in one batch do not interact (the graph is block diagonal and each walker's
energy, σ and bias depend only on its own atoms), so a batched walker integrates the same
trajectory as it would alone, up to float rounding of the batched matrix products
(tests/test_explore.py compares both). The python work of the integrators, collapse
checks and logs still runs one walker at a time (the GIL); the model pass, the dominant
cost, is shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from eip_al.calculator import EIPCalculator, unpack_results
from eip_al.config import ALConfig
from eip_al.explore.walker import explore_dtype, prepare_walker, walker_checkpoint, walker_names
from eip_al.model.eip import BiasFn
from eip_al.model.neighbors import Graph, collate
from eip_al.rundir import RunDir, load_valid, run_step
from eip_al.schemas import ExplorationResult, ExplorationSummary

T = TypeVar("T")


class ReplicaBatch:
    """One shared model that evaluates the frames of several walker threads in one pass.

    `run` starts the threads; inside it a replica's evaluation waits for the other running
    replicas. Outside `run` (e.g. while a UDD amplitude is scaled) a replica evaluates alone.
    """

    def __init__(self, template: EIPCalculator):
        self.template = template
        self._cond = threading.Condition()
        self._members: set[int] = set()
        self._pending: dict[int, tuple[Graph, BiasFn | None]] = {}
        self._done: dict[int, dict | BaseException] = {}
        self._slots = 0
        self.rounds = 0  # batched passes so far
        self.frames = 0  # frames evaluated in them

    def calculator(self) -> ReplicaCalculator:
        """A new replica: an `EIPCalculator` on the shared model with its own neighbor list."""
        self._slots += 1
        return ReplicaCalculator(self, self._slots - 1)

    def evaluate(self, slot: int, g: Graph, bias: BiasFn | None) -> dict:
        """Results of frame `g` for replica `slot` (calculator keys), from a shared pass."""
        with self._cond:
            if slot not in self._members:
                return self._evaluate({slot: (g, bias)})[slot]
            self._pending[slot] = (g, bias)
            self._maybe_run()
            while slot not in self._done:
                self._cond.wait()
            out = self._done.pop(slot)
        if isinstance(out, BaseException):
            raise out
        return out

    def _maybe_run(self) -> None:
        """Run the pass once every running replica waits for it (called with the lock held)."""
        if not self._pending or len(self._pending) < len(self._members):
            return
        pending, self._pending = self._pending, {}
        try:
            self._done.update(self._evaluate(pending))
        except Exception as exc:  # every replica of this pass sees the failure
            self._done.update(dict.fromkeys(pending, exc))
        self._cond.notify_all()

    def _evaluate(self, pending: dict[int, tuple[Graph, BiasFn | None]]) -> dict[int, dict]:
        slots = sorted(pending)
        g = collate([pending[k][0] for k in slots])
        biases = [pending[k][1] for k in slots]
        with torch.enable_grad():
            out = self.template.model.predict(g, bias=biases)
        self.rounds += 1
        self.frames += len(slots)
        return dict(zip(slots, unpack_results(out, g, [b is not None for b in biases]), strict=True))

    def _leave(self, slot: int) -> None:
        with self._cond:
            self._members.discard(slot)
            self._maybe_run()

    def run(self, work: Sequence[tuple[ReplicaCalculator, Callable[[], T]]]) -> list[T | BaseException]:
        """Call each function in its own thread, its replica's evaluations batched with the
        others'; returns each call's value or the exception it raised, in order."""
        outcomes: list[Any] = [None] * len(work)
        with self._cond:
            self._members = {calc.slot for calc, _ in work}

        def target(k: int, slot: int, fn: Callable[[], T]) -> None:
            try:
                outcomes[k] = fn()
            except BaseException as exc:  # reported to the caller, never lost in the thread
                outcomes[k] = exc
            finally:
                self._leave(slot)

        threads = [threading.Thread(target=target, args=(k, calc.slot, fn), daemon=True, name=f"replica-{k}")
                   for k, (calc, fn) in enumerate(work)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return outcomes


class ReplicaCalculator(EIPCalculator):
    """An `EIPCalculator` whose model evaluations go through a `ReplicaBatch` (same results)."""

    def __init__(self, batch: ReplicaBatch, slot: int, **kwargs: Any):
        t = batch.template
        self._setup(t.model, None, t.skin, None)
        self.checkpoint_path, self.meta, self.calibration = t.checkpoint_path, t.meta, t.calibration
        self.batch, self.slot = batch, slot
        Calculator.__init__(self, **kwargs)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        Calculator.calculate(self, atoms, properties, system_changes)
        self.results = self._add_calibrated(self.batch.evaluate(self.slot, self.graph(self.atoms), self.bias))


def run_walkers(cfg: ALConfig, run: RunDir, gen: int, names: Sequence[str]) -> list[ExplorationResult]:
    """Walkers `names` of generation `gen`, each result written to ``explore/<name>.json``;
    finished ones are loaded, not rerun. With `explore.batched` the others advance together
    on one model (`ReplicaBatch`), otherwise one after another. A batched walker that fails
    does not stop the others; the first failure is raised once all have ended."""
    out = run.step_dir(gen, "explore")
    paths = {name: out / f"{name}.json" for name in names}

    def step(name: str, produce: Callable[[], ExplorationResult]) -> ExplorationResult:
        return run_step(paths[name], ExplorationResult, produce, run)[0]

    if not cfg.explore.batched:
        return [step(name, lambda name=name: prepare_walker(cfg, run, gen, name)()) for name in names]
    results: dict[str, ExplorationResult | BaseException] = {}
    todo = [name for name in names if load_valid(paths[name], ExplorationResult) is None]
    if todo:
        template = EIPCalculator(walker_checkpoint(run, gen), device=cfg.explore.device, dtype=explore_dtype(cfg))
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
