"""What a served deployment accepts from whoever triggers a run: data, never code.

Anyone who can create a flow run on the Prefect server chooses the run's parameters, and
the run executes as the user who serves the deployment. So a served run takes only

* `config`: the path of a config file under one of the directories the deployment was
  served with, or a preset name (the stem of a `*.yaml` there): the operator wrote those;
* `overrides`: values for the fields in `ALLOWED_OVERRIDES` only;
* `run_dir`: a directory inside the runs root the deployment was served with.

A config mapping, any other override (executable, launcher, templates, user decks, paths,
...) and a run directory elsewhere are refused with `ParameterError` before anything runs.
The policy travels from `eip-al serve` to the flow-run processes it starts in the
environment variable `POLICY_ENV`, which only the serving user controls.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eip_al.config import ALConfig, ConfigError, config_from_mapping, load_config

POLICY_ENV = "EIP_AL_SERVE_POLICY"
ALLOWED_OVERRIDES = ("name", "generations", "selection.n_select", "train.epochs")
_PRESET = re.compile(r"^[A-Za-z0-9_-]+$")


class ParameterError(ConfigError):
    """A deployment parameter the serve policy does not accept (the message says why)."""


@dataclass(frozen=True)
class ServePolicy:
    """Where a served deployment may read configs from and write runs to (absolute paths)."""

    config_dirs: tuple[Path, ...]
    runs_root: Path

    @classmethod
    def create(cls, config_dirs: list[Path], runs_root: Path) -> ServePolicy:
        dirs = tuple(Path(d).resolve() for d in config_dirs)
        for d in dirs:
            if not d.is_dir():
                raise ConfigError(f"config directory {d}: not a directory")
        return cls(dirs, Path(runs_root).resolve())

    def to_env(self) -> str:
        return json.dumps({"config_dirs": [str(d) for d in self.config_dirs], "runs_root": str(self.runs_root)})

    @classmethod
    def from_env(cls) -> ServePolicy:
        """The policy `eip-al serve` set; refuses to run without one (fail closed)."""
        raw = os.environ.get(POLICY_ENV)
        if not raw:
            raise ParameterError(
                f"no serve policy ({POLICY_ENV} is not set): serve this deployment with `eip-al serve`"
            )
        data = json.loads(raw)
        return cls(tuple(Path(d) for d in data["config_dirs"]), Path(data["runs_root"]))

    def check_run_dir(self, path: Path) -> Path:
        """`path` resolved; ParameterError unless it lies inside the runs root."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.runs_root):
            raise ParameterError(
                f"run_dir {resolved} is outside the runs root {self.runs_root} this deployment was served with"
            )
        return resolved

    def config_path(self, config: object) -> Path:
        """The config file a `config` parameter names (a path under a config dir, or a preset)."""
        dirs = ", ".join(str(d) for d in self.config_dirs)
        if not isinstance(config, str):
            raise ParameterError(
                f"config: a deployment takes the path of a config file under {dirs} or a preset "
                f"name, not a {type(config).__name__} (a config mapping could set any executable "
                "or launcher); put the config in a file there, or use `overrides`"
            )
        if _PRESET.match(config):
            found = [d / f"{config}.yaml" for d in self.config_dirs if (d / f"{config}.yaml").is_file()]
            if found:
                return found[0]
        path = Path(config).resolve()
        if not any(path.is_relative_to(d) for d in self.config_dirs):
            raise ParameterError(
                f"config {config!r}: not a preset, and not a file under the config directories "
                f"this deployment was served with ({dirs})"
            )
        return path


def flatten(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"selection": {"n_select": 4}} -> {"selection.n_select": 4} (dotted keys stay)."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def apply_overrides(cfg: ALConfig, overrides: object, source: str) -> ALConfig:
    """`cfg` with the allowed overrides applied (validated); ParameterError for any other key."""
    if overrides is None:
        return cfg
    if not isinstance(overrides, dict):
        raise ParameterError(f"overrides: expected a mapping, got {type(overrides).__name__}")
    flat = flatten(overrides)
    refused = sorted(k for k in flat if k not in ALLOWED_OVERRIDES)
    if refused:
        raise ParameterError(
            f"overrides {', '.join(refused)}: not allowed in a deployment run (allowed: "
            f"{', '.join(ALLOWED_OVERRIDES)}); anything else, e.g. executables, launchers, "
            "templates or paths, is set in a config file under the served config directories"
        )
    data = cfg.model_dump(mode="json")
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config_from_mapping(data, f"{source} with overrides {json.dumps(flat)}")


def resolve_served_run(
    policy: ServePolicy, config: object, overrides: object, run_dir: object
) -> tuple[ALConfig, Path]:
    """The config and run directory of a deployment run, or ParameterError naming the problem."""
    path = policy.config_path(config)
    cfg = apply_overrides(load_config(path), overrides, str(path))
    if run_dir is not None and not isinstance(run_dir, str):
        raise ParameterError(f"run_dir: expected a path, got {type(run_dir).__name__}")
    root = policy.check_run_dir(Path(run_dir) if run_dir else cfg.resolved_run_dir())
    return cfg, root
