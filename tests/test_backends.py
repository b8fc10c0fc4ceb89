"""The Backend interface: a backend plugs in by one module and one registry line, and the
generic labeling code (jobs, preflight, the flow, the CLI) never branches on a backend or
labeler name."""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

import eip_al.config as config_mod
import eip_al.label.backends as backends_mod
from eip_al.config import LabelerConfig, config_from_mapping
from eip_al.io import read_frames, write_frames
from eip_al.label import label_file
from eip_al.label.backends import Backend, BatchView, LabelOne, RetryOne, Runner, backend_for
from eip_al.preflight import preflight
from tests.test_label_ase import molecule_frames

ROOT = Path(__file__).resolve().parents[1]
RAN: list[str] = []


class ReverseBackend(Backend):
    """Runs the jobs here, one at a time, last job first (so the order proves it ran them)."""

    name = "reverse"
    runs_here = True

    def problems(self, cfg: LabelerConfig) -> list[str]:
        return ["labeler.backend reverse: the test asked for this problem"] if cfg.n_parallel > 1 else []

    def runner(self, batch: BatchView) -> Runner:
        return batch.labeler.execute

    def run_all(self, batch: BatchView, todo: Sequence[Path], label: LabelOne, retry: RetryOne) -> None:
        for d in reversed(todo):
            RAN.append(Path(d).name)
            label(d, batch.labeler.execute)


@pytest.fixture
def reverse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(config_mod.BACKENDS, "reverse", f"{__name__}:ReverseBackend")
    monkeypatch.delitem(backends_mod._BACKENDS, "reverse", raising=False)  # built anew per test
    RAN.clear()


def test_a_new_backend_plugs_in_by_one_registry_line(tmp_path: Path, reverse: None) -> None:
    cfg = config_from_mapping({"labeler": {"kind": "mock", "backend": "reverse"}}).labeler
    frames = molecule_frames()[:3]
    write_frames(tmp_path / "in.extxyz", frames)
    res = label_file(tmp_path / "in.extxyz", tmp_path / "out.extxyz", cfg)
    assert RAN == ["000002", "000001", "000000"]
    assert res.n_ok == 3 and res.backend == "reverse"
    out = read_frames(tmp_path / "out.extxyz", require_cell=False)
    assert [len(a) for a in out] == [len(a) for a in frames]
    # a second run finds every job finished: the backend is not asked again
    label_file(tmp_path / "in.extxyz", tmp_path / "out.extxyz", cfg)
    assert len(RAN) == 3


def test_backend_problems_and_plan_line_come_from_the_backend(tmp_path: Path, reverse: None) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"name": "x", "labeler": {"backend": "reverse", "n_parallel": 2}}))
    pre = preflight(path, tmp_path / "run")
    assert "labeler.backend reverse: the test asked for this problem" in pre.problems
    assert "backend: reverse" in pre.plan


def test_unknown_backend_is_one_line_naming_the_field() -> None:
    with pytest.raises(config_mod.ConfigError, match=r"labeler.backend: must be one of local, slurm, export"):
        config_from_mapping({"labeler": {"backend": "cloud"}})


def test_cli_choices_and_json_schema_follow_the_registries(reverse: None) -> None:
    from eip_al.cli.label_cmds import Backend as BackendChoice

    assert [b.value for b in BackendChoice] == ["local", "slurm", "export"]  # built at import
    props = LabelerConfig.model_json_schema()["properties"]
    assert props["backend"]["enum"] == ["local", "slurm", "export", "reverse"]  # built when asked
    assert props["kind"]["enum"] == list(config_mod.LABELERS)


def test_builtin_backends() -> None:
    assert [(n, backend_for(n).runs_here, backend_for(n).runs_later) for n in config_mod.BACKENDS] == [
        ("local", True, False), ("slurm", False, False), ("export", False, True)]


GENERIC = ["eip_al/label/jobs.py", "eip_al/label/__init__.py", "eip_al/preflight.py", "flows/al.py",
           "eip_al/cli/label_cmds.py", "eip_al/pipeline.py"]


@pytest.mark.parametrize("path", GENERIC)
def test_generic_code_never_compares_with_a_backend_or_labeler_name(path: str) -> None:
    names = set(config_mod.BACKENDS) | set(config_mod.LABELERS)
    found = []
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                if isinstance(side, ast.Constant) and side.value in names:
                    found.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not found, f"{path} branches on a name: {found}"
