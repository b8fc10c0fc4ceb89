"""eip-al: active learning for interatomic potentials with evidential (single-model) uncertainty.

The library is plain Python (no workflow engine): each step is a function that takes the
run config and returns a pydantic artifact (eip_al.schemas) it also writes to the run
directory. `flows/` is the thin Prefect layer over these functions.
"""

__version__ = "0.1.0"
