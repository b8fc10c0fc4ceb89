"""`python -m eip_al.cli` = `eip-al`."""

from eip_al.cli import app

app()
