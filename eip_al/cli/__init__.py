"""Command-line interface: `eip-al --help`. Each area registers its commands on `app`."""

from eip_al.cli import label_cmds, model_cmds, run_cmds  # noqa: F401  (register commands)
from eip_al.cli.app import app

__all__ = ["app"]
