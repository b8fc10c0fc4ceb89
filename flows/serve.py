"""Serve the `active-learning/al-water` deployment (what `eip-al serve` runs).

With a Prefect server on 127.0.0.1 and PREFECT_API_URL pointing at it, this process
registers the deployment and executes its runs:
`prefect deployment run active-learning/al-water [--param config=PRESET-OR-PATH]
[--param overrides='{"generations": 1}']`. Runs take only what `eip_al.serving` allows.
"""

import os
from pathlib import Path
from typing import Optional

from eip_al.serving import POLICY_ENV, ServePolicy, resolve_served_run
from flows.al import DEFAULT_CONFIG, served_active_learning


def serve(
    config: str = DEFAULT_CONFIG,
    name: str = "al-water",
    run_dir: Optional[str] = None,
    config_dirs: Optional[list[str]] = None,
    runs_root: str = "runs",
) -> None:
    """Register the deployment and block, executing triggered runs in child processes.

    Runs may read configs only under `config_dirs` (default: the directory of `config`)
    and write only inside `runs_root`; the policy reaches the runs through POLICY_ENV.
    """
    default = Path(config).resolve()
    policy = ServePolicy.create([Path(d) for d in config_dirs or [default.parent]], Path(runs_root))
    _, root = resolve_served_run(policy, str(default), None, run_dir)  # the default run is allowed
    params: dict = {"config": str(default)}
    if run_dir:
        params["run_dir"] = str(root)
    os.environ[POLICY_ENV] = policy.to_env()
    served_active_learning.serve(name=name, parameters=params)


if __name__ == "__main__":
    serve()
