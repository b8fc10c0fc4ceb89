"""Run directory: atomic writes, skip-on-rerun, config change refusal and fork."""

import os

import pytest

from eip_al.atomic import atomic_write_text
from eip_al.config import config_from_mapping
from eip_al.integrity import run_step
from eip_al.rundir import RunDir, RunDirError, load_valid
from eip_al.schemas import DatasetManifest, TheoryFingerprint


def _manifest(run, n=1):
    return DatasetManifest(
        generation=0, dataset_extxyz="x.extxyz", n_frames=n, counts_by_source={},
        counts_by_generation={}, split_counts={}, theory=TheoryFingerprint(code="mock", method="m"),
        sha256="0",
    )


def test_atomic_write_leaves_old_file_on_crash(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")

    class Boom(Exception):
        pass

    from eip_al.atomic import atomic_path

    with pytest.raises(Boom), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise Boom
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["f.txt"]  # no temp file left behind


def test_run_step_skips_valid_and_redoes_invalid(tmp_path):
    run = RunDir(tmp_path)
    path = run.artifact_path(0, "merge")
    calls = []

    def produce():
        calls.append(1)
        return _manifest(run, n=len(calls))

    first, skipped = run_step(path, DatasetManifest, produce)
    assert not skipped and first.n_frames == 1
    again, skipped = run_step(path, DatasetManifest, produce)
    assert skipped and again == first and len(calls) == 1
    path.write_text("{truncated")  # an interrupted / corrupt artifact is redone
    assert load_valid(path, DatasetManifest) is None
    redone, skipped = run_step(path, DatasetManifest, produce)
    assert not skipped and redone.n_frames == 2


def test_run_step_failure_writes_nothing(tmp_path):
    run = RunDir(tmp_path)
    path = run.artifact_path(0, "train")

    def produce():
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_step(path, DatasetManifest, produce)
    assert not path.exists()


def test_config_change_refused_then_forked(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = config_from_mapping({"name": "t", "selection": {"n_select": 10}})
    run.init(cfg)
    run.init(cfg)  # same config: fine
    changed = config_from_mapping({"name": "t", "selection": {"n_select": 20}})
    with pytest.raises(RunDirError, match="selection.n_select"):
        run.init(changed)
    assert run.load_config().selection.n_select == 10
    run.init(changed, fork=True)
    assert run.load_config().selection.n_select == 20
    backups = [f for f in os.listdir(run.root) if f.startswith("config.") and f != "config.yaml"]
    assert len(backups) == 1


def test_execution_change_needs_no_fork_science_change_does(tmp_path):
    """generations, flow, backend, Slurm, parallelism and devices are execution settings:
    an existing run takes them without --fork; a science change in the same config is refused."""
    run = RunDir(tmp_path / "run")
    run.init(config_from_mapping({"name": "t", "generations": 2}))
    execution = {
        "name": "t", "generations": 5, "flow": {"max_workers": 8},
        "labeler": {"backend": "slurm", "n_parallel": 4, "slurm": {"partition": "gpu"}},
        "train": {"device": "cpu"}, "explore": {"device": "cpu"},
    }
    run.init(config_from_mapping(execution))
    stored = run.load_config()
    assert (stored.generations, stored.flow.max_workers, stored.labeler.backend) == (5, 8, "slurm")
    science = {**execution, "selection": {"hi": 2.0}}
    assert run.science_changes(config_from_mapping(science)) == ["selection.hi"]
    with pytest.raises(RunDirError, match=r"changed: selection\.hi\)"):
        run.init(config_from_mapping(science))
    assert run.load_config().selection.hi == 1.0


def test_execution_fields_name_real_config_fields():
    from eip_al.config import EXECUTION_FIELDS, ALConfig

    for dotted in EXECUTION_FIELDS:
        model = ALConfig
        for part in dotted.split("."):
            assert part in model.model_fields, dotted
            model = model.model_fields[part].annotation


def test_paths_are_relative(tmp_path):
    run = RunDir(tmp_path)
    p = run.step_dir(3, "select") / "selected.extxyz"
    assert run.rel(p) == "gen-003/select/selected.extxyz"
    assert run.abs(run.rel(p)) == p
    assert run.dataset_manifest_path(0) == run.seed_dir / "artifact.json"
    assert run.dataset_manifest_path(2) == run.artifact_path(1, "merge")
    with pytest.raises(RunDirError):
        run.dataset_for(0)


def test_atomic_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        import importlib

        import eip_al.atomic as atomic

        importlib.reload(atomic)
        atomic.atomic_write_text(tmp_path / "p.txt", "x")
        assert (tmp_path / "p.txt").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
        importlib.reload(atomic)
