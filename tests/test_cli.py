"""The run-level CLI: clear one-line errors, status table, schema export."""

import json

from synthetic_run import build_synthetic_run
from typer.testing import CliRunner

from eip_al.cli import app
from eip_al.schemas import TrainingResult

runner = CliRunner()


def test_run_with_bad_config_names_field_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("selection:\n  n_select: 0\n")
    res = runner.invoke(app, ["run", str(bad), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "selection.n_select: must be > 0" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "run").exists()  # nothing written for a config that never validated


def test_run_refuses_changed_config_without_fork(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("name: t\ngenerations: 1\n")
    from eip_al.config import load_config
    from eip_al.rundir import RunDir

    RunDir(tmp_path / "run").init(load_config(a))
    a.write_text("name: t\ngenerations: 1\nselection: {n_select: 7}\n")
    res = runner.invoke(app, ["run", str(a), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "--fork" in res.output and "selection.n_select" in res.output


def test_status_and_missing_run_dir(tmp_path):
    res = runner.invoke(app, ["status", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not a run directory" in res.output
    syn = build_synthetic_run(tmp_path / "run", generations=2)
    res = runner.invoke(app, ["status", str(syn.run.root)])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip().startswith(("│ 0", "│ 1"))]
    assert len(lines) == 2
    assert all("(mean)" in ln for ln in lines)  # artifacts without a median show the mean, marked
    path = syn.run.artifact_path(1, "train")
    tr = TrainingResult.load(path)
    tr.model_copy(update={"valid": tr.valid.model_copy(update={"sigma_median": 0.1234})}).write(path)
    res = runner.invoke(app, ["status", str(syn.run.root)])
    row = next(ln for ln in res.output.splitlines() if ln.strip().startswith("│ 1"))
    assert "0.123" in row and "(mean)" not in row


def test_schema_export(tmp_path):
    res = runner.invoke(app, ["schema", "--out-dir", str(tmp_path)])
    assert res.exit_code == 0
    files = sorted(p.name for p in tmp_path.glob("*.json"))
    assert "TrainingResult.json" in files and "SelectionResult.json" in files
    assert json.loads((tmp_path / "DatasetManifest.json").read_text())["additionalProperties"] is False


def test_error_text_with_brackets_is_printed_verbatim(tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_text("labeler:\n  cp2k:\n    launcher: [mpirun, 3]\n  kind: [bold]\n")
    res = runner.invoke(app, ["run", str(bad)])
    assert res.exit_code == 2
    assert "labeler.kind" in res.output and "['bold']" in res.output
