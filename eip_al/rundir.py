"""The run directory: where every step reads its inputs and writes its artifact.

Layout (see docs/architecture.md)::

    <run>/config.yaml                 resolved config (changing a science setting needs --fork)
    <run>/seed/                       generation-0 dataset (dataset.extxyz + artifact.json)
    <run>/gen-000/train/              checkpoint, metrics.csv, artifact.json
    <run>/gen-000/explore/            <walker>.csv, <walker>.extxyz, <walker>.json, artifact.json
    <run>/gen-000/select/             selected.extxyz, decisions.csv, artifact.json
    <run>/gen-000/label/              jobs/<id>/, labeled.extxyz, artifact.json
    <run>/gen-000/merge/              dataset.extxyz (= next generation's data), artifact.json
    <run>/gen-000/report/             report.md, report.html, *.png, *.csv, artifact.json
    <run>/gen-000/generation.json     GenerationRecord

Each step writes `artifact.json` LAST; a step whose artifact exists and validates is
skipped on rerun (`integrity.run_step`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TypeVar

import yaml

from eip_al.atomic import atomic_write_text
from eip_al.config import (
    ALConfig,
    check_safe_path,
    config_from_mapping,
    dump_config,
    is_execution_field,
)
from eip_al.schemas import Artifact, DatasetManifest, StepName

A = TypeVar("A", bound=Artifact)

ARTIFACT_NAME = "artifact.json"


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (e.g. config changed without fork)."""


class RunDir:
    """Paths and artifact bookkeeping of one run directory."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()

    # -- paths ---------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def seed_dir(self) -> Path:
        return self.root / "seed"

    def gen_dir(self, gen: int) -> Path:
        return self.root / f"gen-{gen:03d}"

    def step_dir(self, gen: int, step: StepName) -> Path:
        return self.gen_dir(gen) / step

    def artifact_path(self, gen: int, step: StepName) -> Path:
        return self.step_dir(gen, step) / ARTIFACT_NAME

    def rel(self, path: Path | str) -> str:
        """Path relative to the run directory (what artifacts store)."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def abs(self, rel_path: str | Path) -> Path:
        """Absolute path of a path stored in an artifact."""
        return self.root / rel_path

    def dataset_manifest_path(self, gen: int) -> Path:
        """Manifest of the dataset generation `gen` trains on (seed for gen 0)."""
        if gen == 0:
            return self.seed_dir / ARTIFACT_NAME
        return self.artifact_path(gen - 1, "merge")

    def dataset_for(self, gen: int) -> DatasetManifest:
        """The dataset generation `gen` trains on; raises if it is not there yet."""
        path = self.dataset_manifest_path(gen)
        found = load_valid(path, DatasetManifest)
        if found is None:
            raise RunDirError(f"{path}: no valid dataset manifest for generation {gen}")
        return found

    def generations(self) -> list[int]:
        """Generations that have a directory, in order."""
        out = []
        for p in sorted(self.root.glob("gen-[0-9][0-9][0-9]")):
            out.append(int(p.name.split("-")[1]))
        return out

    # -- config --------------------------------------------------------------------
    def init(self, cfg: ALConfig, fork: bool = False) -> ALConfig:
        """Create the run dir with `cfg`, or check `cfg` against the stored one.

        A changed science setting under an existing run is refused unless `fork` is true;
        a change of execution settings only (`config.EXECUTION_FIELDS`: devices, backend,
        Slurm, parallelism, flow, generations) is taken as it is. Either way the old config
        is kept as config.<timestamp>.yaml and the new one is stored.
        """
        check_safe_path(self.root, "run directory")  # job scripts name it
        changed = self.changed_fields(cfg)
        science = [k for k in changed if not is_execution_field(k)]
        if science and not fork:
            raise RunDirError(
                f"{self.config_path}: the config differs from the one this run was "
                f"started with (changed: {', '.join(science)}). Use a new run directory, "
                "or pass --fork to continue this run with the new config."
            )
        self.root.mkdir(parents=True, exist_ok=True)
        new_text = dump_config(cfg)
        if self.config_path.exists():
            if changed:
                backup = self.root / f"config.{time.strftime('%Y%m%d-%H%M%S')}.yaml"
                shutil.copy2(self.config_path, backup)
                atomic_write_text(self.config_path, new_text)
        else:
            atomic_write_text(self.config_path, new_text)
        return cfg

    def changed_fields(self, cfg: ALConfig) -> list[str]:
        """Fields where `cfg` differs from the stored config ([] if there is none yet)."""
        if not self.config_path.exists():
            return []
        stored = self.load_config().model_dump(mode="json")
        return _diff_keys(stored, cfg.model_dump(mode="json"))

    def science_changes(self, cfg: ALConfig) -> list[str]:
        """The changed fields that need --fork (all but the execution settings)."""
        return [k for k in self.changed_fields(cfg) if not is_execution_field(k)]

    def load_config(self) -> ALConfig:
        data = yaml.safe_load(self.config_path.read_text())
        return config_from_mapping(data, str(self.config_path))


def _diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def load_valid(path: Path, cls: type[A]) -> A | None:
    """The artifact at `path` if it exists and validates, else None."""
    if not Path(path).exists():
        return None
    try:
        return cls.load(path)
    except ValueError:
        return None
