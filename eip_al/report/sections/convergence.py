"""Convergence: the stop rule and this generation's verdict."""

from __future__ import annotations

import pandas as pd

from eip_al.report.context import Context
from eip_al.rundir import load_valid
from eip_al.schemas import SelectionAudit
from eip_al.stop import rule_text, stop_decision


def render(c: Context) -> None:
    """Whether the run stops after this generation, and by which criterion."""
    c.w.heading("Convergence")
    rule = rule_text(c.cfg.selection)
    if c.selection is None:
        c.w.note(f"no selection result yet; stop rule ({rule}) not evaluated.")
        return
    try:
        decision = stop_decision(c.cfg, c.run, c.gen, predict=c.predict if c.cfg.report.audit else None)
    except (ImportError, OSError, RuntimeError, ValueError, KeyError) as exc:
        c.w.note(f"stop rule not evaluated ({type(exc).__name__}: {exc}).")
        return
    last = c.gen >= c.cfg.generations - 1
    if decision.stop:
        verdict = f"the run stops after this generation — criterion `{decision.criterion}`: {decision.reason}"
        criterion = decision.criterion
    elif last:
        verdict = (f"the run ends after this generation because the configured number of generations "
                   f"({c.cfg.generations}) is reached; the convergence rule was not met")
        criterion = "max_generations"
    else:
        verdict = "not converged: the run goes on"
        criterion = None
    c.put(stop=decision.stop, stop_criterion=criterion)
    audit = load_valid(c.run.artifact_path(c.gen, "audit"), SelectionAudit)
    if audit is not None:
        c.put(fresh_force_error=audit.force_error_config_mean, fresh_force_error_max=audit.force_error_config_max,
              fresh_calibrated_mean=audit.calibrated_config_mean)
    c.w.text(f"Stop rule: {rule}. Verdict: {verdict}.")
    if decision.stop or last:
        c.findings.append(verdict)
    if decision.rows:
        c.w.table(pd.DataFrame(list(decision.rows)), "convergence")
