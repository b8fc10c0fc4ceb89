"""Payload integrity: recorded sizes and sha256, checks before steps, status/run, --redo."""

import json

import pytest
from synthetic_run import build_synthetic_run
from typer.testing import CliRunner

from eip_al import integrity, pipeline
from eip_al.cli import app
from eip_al.integrity import IntegrityError
from eip_al.rundir import RunDir, load_valid
from eip_al.schemas import DatasetManifest, GenerationRecord, TrainingResult

runner = CliRunner()


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture
def syn(tmp_path):
    return build_synthetic_run(tmp_path / "run", generations=2)


@pytest.fixture
def no_flow(monkeypatch):
    """`eip-al run` without Prefect: records whether the flow was started."""
    import flows.al

    calls = []

    def fake(config, run_dir, fork):
        calls.append(run_dir)
        return {"run_dir": run_dir, "generations_done": 0, "stop_reason": None}

    monkeypatch.setattr(flows.al, "active_learning", fake)
    return calls


def test_artifacts_record_payload_sizes_and_hashes(syn):
    run = syn.run
    tr = TrainingResult.load(run.artifact_path(0, "train"))
    model = run.abs(tr.checkpoint)
    assert tr.files[tr.checkpoint].size == model.stat().st_size
    assert set(tr.files) == {tr.checkpoint, tr.metrics_csv}  # no calibration.json in synthetic runs
    seed = DatasetManifest.load(run.seed_dir / "artifact.json")
    assert seed.files[seed.dataset_extxyz].sha256 == seed.sha256
    assert integrity.run_problems(run) == []


def test_truncated_dataset_is_refused_by_train_before_training(tmp_path, monkeypatch):
    syn = build_synthetic_run(tmp_path / "run", generations=1, skip_steps={0: ["train"]})
    run = syn.run
    seed = DatasetManifest.load(run.seed_dir / "artifact.json")
    _truncate(run.abs(seed.dataset_extxyz))

    def no_training(*args, **kwargs):
        raise AssertionError("training started on a truncated dataset")

    monkeypatch.setattr("eip_al.train.train_model", no_training)
    for attempt in (lambda: pipeline.train_step(syn.cfg, run, 0),
                    lambda: __import__("eip_al.train").train.train_generation(syn.cfg, run, 0)):
        with pytest.raises(IntegrityError) as err:
            attempt()
        msg = str(err.value)
        assert "\n" not in msg
        assert msg.startswith(str(run.abs(seed.dataset_extxyz)) + ": has ")
        assert "the seed step wrote it" in msg and "--redo seed" in msg
    rec = GenerationRecord.load(run.gen_dir(0) / "generation.json")
    assert next(s for s in rec.steps if s.step == "train").status == "failed"


def test_legacy_artifacts_load_and_legacy_dataset_hash_is_still_checked(syn):
    run = syn.run
    for path in [run.seed_dir / "artifact.json", *run.root.glob("gen-*/*/*.json")]:
        data = json.loads(path.read_text())
        data.pop("files", None)  # written before eip-al recorded payload files
        path.write_text(json.dumps(data))
    res = runner.invoke(app, ["status", str(run.root)])
    assert res.exit_code == 0, res.output
    _truncate(run.abs(TrainingResult.load(run.artifact_path(0, "train")).checkpoint))
    assert integrity.run_problems(run) == []  # nothing recorded, nothing to compare
    seed = DatasetManifest.load(run.seed_dir / "artifact.json")
    path = run.abs(seed.dataset_extxyz)
    path.write_bytes(path.read_bytes().replace(b"split=train", b"split=Train", 1))
    [(where, msg)] = integrity.run_problems(run)
    assert where == run.seed_dir / "artifact.json" and "sha256 differs" in msg


def test_truncated_model_is_detected_by_status_and_by_run(syn, no_flow):
    run = syn.run
    model = run.abs(TrainingResult.load(run.artifact_path(0, "train")).checkpoint)
    _truncate(model)
    res = runner.invoke(app, ["status", str(run.root)])
    assert res.exit_code == 1
    row = next(ln for ln in res.output.splitlines() if ln.strip().startswith("│ 0"))
    assert "✗" in row
    changed = [ln for ln in res.output.splitlines() if ln.startswith("changed:")]
    assert len(changed) == 1 and "model.pt" in changed[0] and "step train of generation 0" in changed[0]
    assert f"--run-dir {run.root} --redo train --gen 0" in changed[0]

    config = str(run.config_path)
    res = runner.invoke(app, ["run", config, "--run-dir", str(run.root)])
    assert res.exit_code == 2 and not no_flow
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "model.pt" in lines[0]
    assert f"eip-al run {config} --run-dir {run.root} --redo train --gen 0" in lines[0]

    res = runner.invoke(app, ["run", config, "--run-dir", str(run.root), "--redo", "train", "--gen", "0"])
    assert res.exit_code == 0, res.output
    assert no_flow == [str(run.root)]
    assert model.is_file()  # payloads stay; only the artifacts moved aside
    assert load_valid(run.artifact_path(0, "train"), TrainingResult) is None


def test_skipped_step_with_a_changed_file_stops_the_rerun(syn):
    run = syn.run
    tr = TrainingResult.load(run.artifact_path(0, "train"))
    run.abs(tr.checkpoint).write_bytes(b"x" * tr.files[tr.checkpoint].size)  # same size
    with pytest.raises(IntegrityError, match=r"model.pt: changed since it was written.*--redo train --gen 0"):
        pipeline.train_step(syn.cfg, run, 0)


def test_redo_train_gen0_invalidates_train_to_report_and_later_generations_only(syn):
    run = syn.run
    last = run.step_dir(0, "train") / "last.pt"
    last.write_bytes(b"finished training state")
    member = run.step_dir(0, "train") / "member-1" / "last.pt"  # an ensemble member's resume point
    member.parent.mkdir()
    member.write_bytes(b"finished member state")
    audit = run.gen_dir(1) / "audit" / "artifact.json"
    audit.parent.mkdir()
    audit.write_text("{}")
    before = {p for p in run.root.rglob("*") if p.is_file()}
    dest, moved = integrity.redo(run, "train", 0)
    rel = {p.relative_to(dest).as_posix() for p in moved}
    for gen in (0, 1):
        for step in ("train", "explore", "select", "label", "merge"):
            assert f"gen-00{gen}/{step}/artifact.json" in rel
            assert not run.artifact_path(gen, step).exists()
        assert f"gen-00{gen}/explore/md-300K-0.json" in rel
        assert GenerationRecord.load(run.gen_dir(gen) / "generation.json").steps == []
    assert "gen-000/train/last.pt" in rel and "gen-001/audit/artifact.json" in rel
    assert "gen-000/train/member-1/last.pt" in rel
    assert not any(r.startswith("seed/") for r in rel)
    assert load_valid(run.seed_dir / "artifact.json", DatasetManifest) is not None
    after = {p for p in run.root.rglob("*") if p.is_file() and dest not in p.parents}
    assert after == before - {run.root / r for r in rel}  # everything else is where it was
    assert all((dest / r).is_file() for r in rel)


def test_redo_later_step_keeps_earlier_steps_and_generations(syn):
    run = syn.run
    dest, moved = integrity.redo(run, "select", 1)
    rel = sorted(p.relative_to(dest).as_posix() for p in moved)
    assert rel == ["gen-001/label/artifact.json", "gen-001/merge/artifact.json",
                   "gen-001/select/artifact.json"]
    steps = [s.step for s in GenerationRecord.load(run.gen_dir(1) / "generation.json").steps]
    assert steps == ["train", "explore"]
    assert all(run.artifact_path(0, s).exists() for s in ("train", "explore", "select", "label", "merge"))


def test_redo_arguments_are_checked(syn, no_flow):
    config, root = str(syn.run.config_path), str(syn.run.root)
    res = runner.invoke(app, ["run", config, "--run-dir", root, "--redo", "train"])
    assert res.exit_code == 2 and "--redo train needs --gen N" in res.output
    res = runner.invoke(app, ["run", config, "--run-dir", root, "--redo", "train", "--gen", "7"])
    assert res.exit_code == 2 and "has no generation 7 (has: 0, 1)" in res.output
    res = runner.invoke(app, ["run", config, "--run-dir", root, "--gen", "0"])
    assert res.exit_code == 2 and "only used with --redo" in res.output
    assert not no_flow and RunDir(root).artifact_path(0, "train").exists()
