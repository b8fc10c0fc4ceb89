"""The Prefect layer: full flow, resume after a failure, and a real server + deployment.

All runs use a tiny config (8 H2O, a 1-interaction model, mock labeler) so the whole loop
takes about a minute. Assertions are on the artifacts written to disk.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from eip_al.config import config_from_mapping
from eip_al.rundir import RunDir, load_valid
from eip_al.schemas import (
    DatasetManifest,
    ExplorationSummary,
    GenerationRecord,
    GenerationReport,
    LabelingResult,
    SelectionAudit,
    SelectionResult,
    TrainingResult,
)

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

TINY = {
    "name": "al-tiny",
    "generations": 2,
    "system": {"kind": "water", "n_molecules": 8},
    "seed_data": {"n_frames": 16, "equilibration_steps": 100, "stride": 5},
    "model": {"n_features": 16, "n_interactions": 1, "cutoff": 3.5, "n_rbf": 8},
    "train": {"epochs": 4, "batch_size": 4, "lr": 2e-3, "early_stopping_patience": 4},
    "explore": {
        "walkers": [
            {"kind": "md", "steps": 60, "sample_every": 10},
            {"kind": "udd", "steps": 60, "sample_every": 10},
        ],
        # a 4-epoch model crosses the learned pair limits within a few steps; these tests need
        # candidates in every generation, so only the absolute and covalent floors apply
        "collapse": {"learned_factor": None},
    },
    "selection": {"n_select": 4, "lo": 0.0001, "hi": 100.0, "min_step_gap": 10},
    # 1-epoch models walk into close contacts: these tests are about resume and Prefect, so
    # no label quarantine (tests/test_label.py and test_demo.py test it)
    "labeler": {"kind": "mock", "outlier_force_factor": None},
    "merge": {"valid_fraction": 0.2, "test_fraction": 0.1},
    "flow": {"label_retries": 0},
}


def tiny_config(**overrides):
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data.update(overrides)
    return data


def assert_generation_complete(run: RunDir, gen: int, prev_frames: int) -> int:
    """Every step's artifact is on disk and consistent; returns the new dataset size."""
    tr = TrainingResult.load(run.artifact_path(gen, "train"))
    assert run.abs(tr.checkpoint).is_file()
    ex = ExplorationSummary.load(run.artifact_path(gen, "explore"))
    assert {w.kind for w in ex.walkers} == {"md", "udd"}
    sel = SelectionResult.load(run.artifact_path(gen, "select"))
    assert sel.n_selected <= TINY["selection"]["n_select"]
    lab = LabelingResult.load(run.artifact_path(gen, "label"))
    assert lab.n_ok + lab.n_failed == sel.n_selected
    man = DatasetManifest.load(run.artifact_path(gen, "merge"))
    assert man.n_frames == prev_frames + lab.n_ok - man.n_duplicates_dropped
    if lab.n_ok:  # the audit step, before the report: the selecting model on its fresh labels
        assert SelectionAudit.load(run.artifact_path(gen, "audit")).n_frames == lab.n_ok
    rep = GenerationReport.load(run.artifact_path(gen, "report"))
    assert run.abs(rep.report_html).stat().st_size > 1000
    rec = GenerationRecord.load(run.gen_dir(gen) / "generation.json")
    assert {s.step for s in rec.steps if s.status == "done"} >= {"train", "select", "merge"}
    return man.n_frames


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def _flow_run_log(flow_run_id: str) -> str:
    """Every log message of one flow run itself (not of its tasks or subflows), joined."""
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    this_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(flow_run_id)]))
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while batch := client.read_logs(log_filter=this_run, limit=200, offset=len(messages)):
            messages += [log.message if log.task_run_id is None else "" for log in batch]
    return "\n".join(messages)


def test_flow_two_generations_then_resume_after_label_failure(harness, tmp_path, monkeypatch):
    from eip_al import pipeline
    from flows.al import FLOW_RUN_IDS, active_learning

    run_dir = tmp_path / "run"
    # First attempt: the label step of generation 1 dies mid-way (after 2 jobs).
    real = pipeline.label_job_step
    calls = {"n": 0}

    def flaky(cfg, run, gen, job_id):
        if gen == 1:
            calls["n"] += 1
            if calls["n"] > 2:
                raise RuntimeError("simulated crash during labeling")
        return real(cfg, run, gen, job_id)

    monkeypatch.setattr(pipeline, "label_job_step", flaky)
    first = len(FLOW_RUN_IDS)
    with pytest.raises(BaseException):  # noqa: B017 (Prefect may wrap the crash)
        active_learning(config=tiny_config(), run_dir=str(run_dir))
    # walker progress (printed in task threads of nested generation subflows) is in the
    # ROOT flow run's log, beside the generation's summary lines
    root_log = _flow_run_log(FLOW_RUN_IDS[first])
    assert "[explore] gen 0 md-300K-0: started" in root_log
    assert "[explore] gen 0 udd-300K-0: finished after" in root_log or "udd-300K-0: collapsed" in root_log
    assert "gen 0: selected" in root_log and "gen 0 done in" in root_log
    run = RunDir(run_dir)
    seed = DatasetManifest.load(run.seed_dir / "artifact.json")
    n0 = assert_generation_complete(run, 0, seed.n_frames)
    assert load_valid(run.artifact_path(1, "label"), LabelingResult) is None
    done_jobs = sorted((run.step_dir(1, "label") / "jobs").glob("*/outcome.json"))
    assert len(done_jobs) >= 2
    stamps = {p: p.stat().st_mtime_ns for p in done_jobs}
    train1 = run.artifact_path(1, "train").stat().st_mtime_ns

    # Resume: finished steps and finished labels are not redone.
    monkeypatch.setattr(pipeline, "label_job_step", real)
    second = len(FLOW_RUN_IDS)
    out = active_learning(config=tiny_config(), run_dir=str(run_dir))
    root_log = _flow_run_log(FLOW_RUN_IDS[second])
    assert "[label] gen 1: " in root_log and "jobs done, 0 failed" in root_log
    assert "gen 1 done in" in root_log
    assert out["generations_done"] == 2
    assert run.artifact_path(1, "train").stat().st_mtime_ns == train1
    for p, stamp in stamps.items():
        assert p.stat().st_mtime_ns == stamp, f"{p} was redone"
    n1 = assert_generation_complete(run, 1, n0)
    ids = [a.info["frame_id"] for a in __import__("ase.io").io.read(run.abs(
        DatasetManifest.load(run.artifact_path(1, "merge")).dataset_extxyz), ":")]
    assert len(ids) == len(set(ids)) == n1  # no duplicated label
    assert (run.root / "summary.html").is_file()
    # the report of a REAL run (not the synthetic fixture): names drift between steps and
    # report would show here as missing curves, rows or figures
    rep = GenerationReport.load(run.artifact_path(0, "report"))
    out = run.step_dir(0, "report")
    assert {"training_curves.png", "energy_sigma.png", "pair_min_distances.png", "rdf.png"} <= {
        Path(f).name for f in rep.figures}
    curves = pd.read_csv(out / "training_curves.csv")
    assert curves[["force_mae", "sigma_mean", "spearman_atom"]].notna().all().all()  # validation curves
    geometry = pd.read_csv(out / "geometry.csv").set_index("frames")
    assert {"dataset", "pooled", "selected"} <= set(geometry.index)
    from ase.io import read

    from eip_al.screening import smallest_pair_distances

    trained_on = read(run.abs(run.dataset_for(0).dataset_extxyz), ":")
    assert geometry.loc["dataset", "O-O min (Å)"] == pytest.approx(smallest_pair_distances(trained_on)["O-O"])
    steps = pd.read_csv(out / "steps.csv")["step"].tolist()
    assert steps == ["train", "explore", "select", "label", "merge", "audit", "report"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _deployment_run(env: dict, *params: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "prefect", "deployment", "run", "active-learning/al-water",
            "--watch", "--watch-timeout", "600"]
    for p in params:
        argv += ["--param", p]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=700)


def test_deployment_on_real_server(tmp_path):
    """prefect server on 127.0.0.1 + `eip-al serve` + `prefect deployment run ... --watch`:
    a config mapping that would run a command is refused (nothing runs), a safe override works."""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
    )
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    cfg_path = cfg_dir / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(generations=2)))
    config_from_mapping(yaml.safe_load(cfg_path.read_text()))
    run_dir = tmp_path / "runs" / "run"
    marker = tmp_path / "pwned"
    evil = tiny_config(labeler={"kind": "cp2k", "cp2k": {
        "launcher": ["bash", "-c", f"id > {marker}; exit 1", "x"]}})
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=open(logs / "server.log", "w"), stderr=subprocess.STDOUT,
        ))
        _wait(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, 180, "server")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "eip_al.cli", "serve", "--config", str(cfg_path),
             "--run-dir", str(run_dir), "--runs-root", str(tmp_path / "runs")],
            env=env, cwd=Path(__file__).resolve().parents[1],
            stdout=open(logs / "serve.log", "w"), stderr=subprocess.STDOUT,
        ))
        _wait(
            lambda: httpx.get(f"{api}/deployments/name/active-learning/al-water", timeout=2)
            .status_code == 200,
            180, "deployment active-learning/al-water",
        )
        res = _deployment_run(env, f"config={json.dumps(evil)}")
        detail = res.stdout[-3000:] + res.stderr[-3000:] + (logs / "serve.log").read_text()[-3000:]
        assert res.returncode != 0 and "Failed" in res.stdout + res.stderr, detail
        assert "a deployment takes the path of a config file" in detail, detail
        res = _deployment_run(env, "overrides=" + json.dumps({"labeler.cp2k.executable": "sh"}))
        detail = res.stdout[-3000:] + res.stderr[-3000:] + (logs / "serve.log").read_text()[-3000:]
        assert res.returncode != 0, detail
        assert "overrides labeler.cp2k.executable: not allowed" in detail, detail
        assert not marker.exists() and not run_dir.exists()  # nothing ran

        res = _deployment_run(env, "config=tiny", "overrides="
                              + json.dumps({"generations": 1, "selection": {"n_select": 3}}))
        detail = res.stdout[-3000:] + res.stderr[-3000:] + (logs / "serve.log").read_text()[-3000:]
        assert res.returncode == 0, detail
        assert "Completed" in res.stdout + res.stderr, detail
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    run = RunDir(run_dir)
    seed = DatasetManifest.load(run.seed_dir / "artifact.json")
    assert_generation_complete(run, 0, seed.n_frames)
    assert SelectionResult.load(run.artifact_path(0, "select")).n_selected <= 3
    assert run.generations() == [0]  # the override, not the file's 2 generations
