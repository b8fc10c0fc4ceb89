"""The stop rule: when the active-learning loop has converged, and the words that say so.

One rule (docs/calibration.md): each of the last `selection.converge_generations`
generations pooled frames, had no collapsed walker, and had a candidate fraction and a
failed + unphysical fraction below `selection.converge_candidate_fraction`; with
`selection.converge_force_error` set, each also had fresh labels whose mean per-config
force error (the selection audit, `eip_al.audit`) is below it. The selection step stores
the candidate-fraction half (`SelectionResult.converged`, via `convergence`); the pipeline
asks `stop_decision` after every generation; the report shows `rule_text` and the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eip_al.audit import Predictor, predict_checkpoint, selection_audit
from eip_al.config import ALConfig, SelectConfig
from eip_al.rundir import RunDir, load_valid
from eip_al.schemas import SelectionResult


@dataclass(frozen=True)
class GenerationSignal:
    """What the stop rule needs from one generation."""

    generation: int
    candidate_ok: bool  # `generation_quiet`'s per-generation condition
    candidate_text: str
    force_error: float | None  # mean per-config force error of the fresh labels (None: none)
    n_fresh: int = 0


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    criterion: str | None  # "candidate_fraction" | "force_error+candidate_fraction"
    reason: str | None
    rows: tuple[dict[str, Any], ...] = ()  # one per generation of the window, for reports


def rule_text(sel: SelectConfig) -> str:
    """The stop rule in words, with the configured numbers."""
    text = (f"candidate fraction (and failed + unphysical) below {sel.converge_candidate_fraction:g}, no "
            f"collapsed walker, for {sel.converge_generations} consecutive generation(s)")
    if sel.converge_force_error is not None:
        text += f", and the fresh labels' mean per-config force error below {sel.converge_force_error:g} eV/Å"
    return text


def generation_quiet(res: SelectionResult, limit: float) -> tuple[bool, str]:
    """Whether one generation meets the candidate-fraction condition, and its numbers in words."""
    o = res.overall
    text = (
        f"gen {res.generation}: candidate {o.candidate:.3f}, failed+unphysical "
        f"{o.failed + o.unphysical:.3f}, n={o.n}, collapsed walkers {res.n_collapsed_walkers}"
    )
    ok = o.n > 0 and res.n_collapsed_walkers == 0 and o.candidate < limit and o.failed + o.unphysical < limit
    return ok, text


def convergence(
    history: Sequence[SelectionResult | None], limit: float, k: int
) -> tuple[bool, str | None]:
    """The candidate-fraction half of the rule over the last `k` generations (`history` ends
    with the current one): each must exist and be quiet (`generation_quiet`; a low candidate
    fraction because exploration blew up is not convergence). Returns (converged, reason)."""
    window = list(history)[-k:]
    if len(window) < k or any(r is None for r in window):
        return False, None
    checks = [generation_quiet(r, limit) for r in window]  # type: ignore[arg-type]
    if not all(ok for ok, _ in checks):
        return False, None
    detail = "; ".join(text for _, text in checks)
    return True, f"{k} consecutive generation(s) below candidate fraction {limit}: {detail}"


def stop_rule(
    signals: Sequence[GenerationSignal | None], k: int, force_tol: float | None
) -> StopDecision:
    """Stop when each of the last `k` generations (`signals` ends with the current one) meets
    the candidate-fraction condition and, if `force_tol` is set, has fresh labels whose mean
    per-config force error is below `force_tol` (eV/Å). A missing generation, or one with
    no fresh labels while `force_tol` is set, breaks the streak."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    window = list(signals)[-k:]
    criterion = "candidate_fraction" if force_tol is None else "force_error+candidate_fraction"
    rows = []
    for s in window:
        if s is None:
            continue
        err_ok = None if force_tol is None else (s.force_error is not None and s.force_error < force_tol)
        rows.append({"generation": s.generation, "candidate_ok": s.candidate_ok, "force_error": s.force_error,
                     "n_fresh": s.n_fresh, "force_error_ok": err_ok})
    ok = len(window) == k and all(s is not None for s in window) and all(
        r["candidate_ok"] and r["force_error_ok"] is not False for r in rows
    )
    if not ok:
        return StopDecision(False, None, None, tuple(rows))
    parts = [s.candidate_text + (f", fresh force error {s.force_error:.4g} eV/Å" if force_tol is not None else "")
             for s in window]  # type: ignore[union-attr]
    head = f"{k} consecutive generation(s) below candidate fraction limit"
    if force_tol is not None:
        head += f" with fresh-label force error below {force_tol:g} eV/Å"
    return StopDecision(True, criterion, f"{head}: " + "; ".join(parts), tuple(rows))


def stop_decision(
    cfg: ALConfig, run: RunDir, gen: int, predict: Predictor | None = predict_checkpoint
) -> StopDecision:
    """The stop rule on the run directory for generation `gen` (see `stop_rule`).

    Without `selection.converge_force_error` this is exactly the selection step's
    candidate-fraction signal (`SelectionResult.converged`). With it, the selection audit of
    each generation of the window is read or computed (`audit.selection_audit`).
    """
    sel_cfg = cfg.selection
    k, tol = sel_cfg.converge_generations, sel_cfg.converge_force_error
    current = load_valid(run.artifact_path(gen, "select"), SelectionResult)
    if tol is None:
        if current is not None and current.converged:
            return StopDecision(True, "candidate_fraction",
                                current.converged_reason or "candidate fraction below its limit")
        return StopDecision(False, None, None)
    signals: list[GenerationSignal | None] = []
    for g in range(max(0, gen - k + 1), gen + 1):
        sel = current if g == gen else load_valid(run.artifact_path(g, "select"), SelectionResult)
        if sel is None:
            signals.append(None)
            continue
        quiet, text = generation_quiet(sel, sel_cfg.converge_candidate_fraction)
        aud = selection_audit(run, g, predict)
        signals.append(GenerationSignal(
            generation=g, candidate_ok=quiet, candidate_text=text,
            force_error=aud.force_error_config_mean if aud is not None else None,
            n_fresh=aud.n_frames if aud is not None else 0,
        ))
    return stop_rule(signals, k, tol)
