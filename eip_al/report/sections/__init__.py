"""The sections of a generation's report, one module each; `render(c)` appends its blocks.

Each reads one step's artifact and degrades to a visible note when that step has not run.
`eip_al.report.generation.report_generation` calls them in display order.
"""
