"""Per-generation reports and the run summary (issue 10): offline md/html/png/csv files.

`report_generation` writes one generation's report, `run_summary` the cross-generation
summary, `report_run` both (what `eip-al report RUN_DIR` calls); `prefect_summary` gives
the flow layer plain data to publish as Prefect artifacts (this package never imports
Prefect). Definitions and figure guide: docs/report.md.
"""

from eip_al.report.diversity import config_entropy, water_order_parameters
from eip_al.report.generation import report_generation
from eip_al.report.summary import prefect_summary, report_run, run_summary

__all__ = [
    "config_entropy",
    "prefect_summary",
    "report_generation",
    "report_run",
    "run_summary",
    "water_order_parameters",
]
