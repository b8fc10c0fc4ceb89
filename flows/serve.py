"""Serve the `active-learning/al-water` deployment (what `eip-al serve` runs).

With a Prefect server on 127.0.0.1 and PREFECT_API_URL pointing at it, this process
registers the deployment and executes its runs:
`prefect deployment run active-learning/al-water [--param config=...]`.
"""

from pathlib import Path
from typing import Optional

from flows.al import DEFAULT_CONFIG, active_learning


def serve(config: str = DEFAULT_CONFIG, name: str = "al-water", run_dir: Optional[str] = None) -> None:
    """Register the deployment and block, executing triggered runs in this process."""
    params: dict = {"config": str(Path(config).resolve())}
    if run_dir:
        params["run_dir"] = str(Path(run_dir).resolve())
    active_learning.serve(name=name, parameters=params)


if __name__ == "__main__":
    serve()
