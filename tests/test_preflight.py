"""Pre-flight (`eip-al check`, and `eip-al run` before it starts): the plan, and every
problem that can be found before work starts, each on its own line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ase import Atoms
from ase.io import write
from cp2k_input_tools import DEFAULT_CP2K_INPUT_XML
from typer.testing import CliRunner

from eip_al.cli import app
from eip_al.preflight import preflight

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _schema_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EIP_AL_CACHE_DIR", str(tmp_path / "cache"))


def config(tmp_path: Path, data: dict | str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def cp2k(**cp2k_cfg) -> dict:
    """A CP2K labeler validating against cp2k-input-tools' bundled schema (no `cp2k --xml`)."""
    return {"kind": "cp2k", "cp2k": {"schema_xml": str(DEFAULT_CP2K_INPUT_XML), **cp2k_cfg}}


def test_demo_config_passes_and_check_prints_the_plan(tmp_path: Path) -> None:
    res = runner.invoke(app, ["check", str(ROOT / "configs" / "al-water-demo.yaml"),
                              "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    for expect in ("up to 3 generation(s)", "walkers per generation: 2", "labeler: mock",
                   "backend: local", f"run dir: {tmp_path / 'run'}", "no problems found"):
        assert expect in res.output
    assert not (tmp_path / "run").exists()  # check writes nothing


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("", "the config is empty"),
        ("model:\n  cutoff: .inf\n", "model.cutoff: must be a finite number"),
        ("merge:\n  valid_fraction: 0.5\n  test_fraction: 0.5\n", "valid_fraction + test_fraction must be below 1"),
    ],
)
def test_config_errors_are_problems(tmp_path: Path, text: str, expect: str) -> None:
    res = runner.invoke(app, ["check", str(config(tmp_path, text))])
    assert res.exit_code == 1 and expect in res.output, res.output


def test_missing_files_are_all_reported_at_once(tmp_path: Path) -> None:
    pre = preflight(config(tmp_path, {
        "name": "x",
        "system": {"kind": "file", "structure_file": str(tmp_path / "nope.cif")},
        "seed_data": {"source": "file", "file": str(tmp_path / "seed.extxyz")},
        "labeler": cp2k(template=str(tmp_path / "gone.inp")),
    }), tmp_path / "run")
    assert pre.cfg is not None and len(pre.problems) == 3, pre.problems
    assert f"system.structure_file: {tmp_path / 'nope.cif'} not found" in pre.problems
    assert f"seed_data.file: {tmp_path / 'seed.extxyz'} not found" in pre.problems
    assert any("labeler.cp2k.template" in p and "gone.inp not found" in p for p in pre.problems)
    pre = preflight(config(tmp_path, {"name": "x", "labeler": cp2k(user_input=str(tmp_path / "deck.inp"))}))
    assert any("labeler.cp2k.user_input" in p and "not found" in p for p in pre.problems)


def test_executables_must_be_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path, {"name": "x", "labeler": cp2k(executable="no-such-cp2k", launcher=["no-such-mpirun", "-n", "2"])})
    problems = preflight(cfg, tmp_path / "run").problems
    assert "labeler.cp2k.executable: 'no-such-cp2k' not found on PATH" in problems
    assert "labeler.cp2k.launcher: 'no-such-mpirun' not found on PATH" in problems
    # export and slurm run CP2K elsewhere: no CP2K needed here; slurm needs sbatch here
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for backend, expect in (("export", []), ("slurm", ["'sbatch' not found", "'squeue' not found"])):
        cfg = config(tmp_path, {"name": "x", "labeler": {"kind": "mock", "backend": backend}})
        problems = preflight(cfg, tmp_path / "run").problems
        assert len(problems) == len(expect) and all(e in p for e, p in zip(expect, problems, strict=True)), problems


def test_cp2k_input_is_validated_and_covers_the_system(tmp_path: Path) -> None:
    deck = (ROOT / "templates" / "cp2k" / "water-pbe-d3.inp").read_text()
    ok = config(tmp_path, {"name": "x", "labeler": cp2k(template=str(ROOT / "templates" / "cp2k" / "water-pbe-d3.inp"),
                                                         executable="true")})
    assert preflight(ok, tmp_path / "run").problems == []
    bad = tmp_path / "bad.inp"
    bad.write_text(deck.replace("&END DFT", "  NO_SUCH_KEYWORD 1\n    &END DFT", 1))
    pre = preflight(config(tmp_path, {"name": "x", "labeler": cp2k(user_input=str(bad), executable="true")}))
    assert len(pre.problems) == 1 and "bad.inp" in pre.problems[0] and "NO_SUCH_KEYWORD" in pre.problems[0], pre.problems
    salt = tmp_path / "salt.extxyz"
    write(salt, Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]], cell=[5.6] * 3, pbc=True))
    pre = preflight(config(tmp_path, {"name": "x", "system": {"kind": "file", "structure_file": str(salt)},
                                      "labeler": cp2k(executable="true")}))
    assert len(pre.problems) == 1 and "no &KIND for element(s) ['Cl', 'Na']" in pre.problems[0], pre.problems


def test_unreadable_structure_file(tmp_path: Path) -> None:
    junk = config(tmp_path, "this is not a structure\n", name="junk.xyz")
    pre = preflight(config(tmp_path, {"name": "x", "system": {"kind": "file", "structure_file": str(junk)}}))
    assert len(pre.problems) == 1 and "cannot be read" in pre.problems[0], pre.problems


def test_run_dir_checks(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"name": "x", "generations": 1})
    assert "control character" in preflight(cfg, tmp_path / "a\nb").problems[0]
    from eip_al.config import load_config
    from eip_al.rundir import RunDir

    RunDir(tmp_path / "run").init(load_config(cfg))
    more = config(tmp_path, {"name": "x", "generations": 2})  # an execution setting: no --fork
    assert preflight(more, tmp_path / "run").problems == []
    changed = config(tmp_path, {"name": "x", "generations": 1, "selection": {"n_select": 7}})
    problems = preflight(changed, tmp_path / "run").problems
    assert len(problems) == 1 and "changed: selection.n_select" in problems[0] and "--fork" in problems[0]
    assert preflight(changed, tmp_path / "run", fork=True).problems == []
    (tmp_path / "file").write_text("")
    assert "is not a directory" in preflight(cfg, tmp_path / "file").problems[0]


def test_cuda_requested_without_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pre = preflight(config(tmp_path, {"name": "x", "train": {"device": "cuda"}}), tmp_path / "run")
    assert pre.problems == ["train.device: cuda, but no CUDA device is available"]


def test_run_refuses_to_start_with_problems_and_writes_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"name": "x", "seed_data": {"source": "file", "file": str(tmp_path / "no.extxyz")},
                            "labeler": {"kind": "mock", "backend": "slurm"}})
    res = runner.invoke(app, ["run", str(cfg), "--run-dir", str(tmp_path / "run")], env={"PATH": str(tmp_path)})
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 3, res.output  # the seed file, sbatch, squeue: one line each
    assert "seed_data.file" in errors[0] and "'sbatch' not found" in errors[1]
    assert not (tmp_path / "run").exists()
