"""The flow's parallel steps on Dask (`flow.task_runner: dask`, prefect-dask DaskTaskRunner).

* the local cluster that `flows.al._task_runner` builds listens on 127.0.0.1 only;
* the tiny run (tests/test_flows.py TINY, mock labeler) completes on a local Dask cluster
  of worker processes, and its walker and labeling tasks really ran in those processes;
* the same run on Dask workers that are Slurm jobs (dask-jobqueue SLURMCluster on the
  local Slurm of tests/test_slurm.py), reached through `flow.dask_address`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("prefect_dask", reason="needs the dask extra: pip install -e '.[dask]'")

import dask  # noqa: E402
from test_flows import TINY, assert_generation_complete, tiny_config  # noqa: E402
from test_slurm import LocalSlurm, local_slurm  # noqa: E402,F401  (fixture)

from eip_al.config import config_from_mapping  # noqa: E402
from eip_al.rundir import RunDir  # noqa: E402
from eip_al.schemas import DatasetManifest, LabelingResult  # noqa: E402

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

# Tasks the flow submits (run in parallel) — the ones that must land on Dask workers.
SUBMITTED = ("walker_task", "label_job_task")

# Loaded into every worker process of the local cluster (distributed.worker.preload):
# records each finished task's key and the pid it ran in.
PRELOAD = '''
import inspect, json, os
from distributed.diagnostics.plugin import WorkerPlugin


class RecordTasks(WorkerPlugin):
    name = "eip-al-test-record-tasks"

    def setup(self, worker):
        self.path = os.environ["EIP_TEST_TASK_LOG"]

    def transition(self, key, start, finish, **kwargs):
        if finish in ("memory", "error"):
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "key": str(key), "finish": finish}) + "\\n")


async def dask_setup(worker):
    added = worker.plugin_add(RecordTasks())
    if inspect.isawaitable(added):
        await added
'''


def _listening() -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket the calling process listens on."""
    import psutil

    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections(kind="inet")
            if c.status == "LISTEN"}


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def dask_config(**flow: object) -> dict:
    data = tiny_config(generations=1)
    data["flow"] = {**data["flow"], "task_runner": "dask", **flow}
    return data


def test_local_dask_cluster_listens_on_localhost_only() -> None:
    """Scheduler, dashboard and workers of the default local cluster bind 127.0.0.1."""
    from prefect_dask import DaskTaskRunner

    from flows.al import _task_runner

    cfg = config_from_mapping(dask_config(max_workers=1))
    runner = _task_runner(cfg)
    assert isinstance(runner, DaskTaskRunner)
    before = _listening()
    with runner:
        client = runner.client
        assert len(client.scheduler_info()["workers"]) == 1
        workers = client.run(_listening)
        scheduler = _listening() - before  # the scheduler lives in this process
    assert scheduler and all(workers.values()), (scheduler, workers)
    found = {"scheduler process": scheduler, **{f"worker {w}": s for w, s in workers.items()}}
    exposed = {who: sorted(f"{ip}:{port}" for ip, port in socks if ip not in ("127.0.0.1", "::1"))
               for who, socks in found.items()}
    exposed = {who: socks for who, socks in exposed.items() if socks}
    assert not exposed, (
        f"Dask servers listen beyond localhost: {exposed}; pass dashboard_address='127.0.0.1:8787' "
        "(and keep the default host) in the LocalCluster kwargs of flows/al.py _task_runner"
    )


def _tasks_ran(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_flow_on_local_dask_cluster(harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny run on a local cluster of worker processes (processes=True: tasks pickled)."""
    from flows.al import active_learning

    log = tmp_path / "tasks.jsonl"
    preload = tmp_path / "record_tasks.py"
    preload.write_text(PRELOAD)
    monkeypatch.setenv("EIP_TEST_TASK_LOG", str(log))
    run_dir = tmp_path / "run"
    with dask.config.set({"distributed.worker.preload": [str(preload)]}):
        out = active_learning(config=dask_config(), run_dir=str(run_dir))
    assert out["generations_done"] == 1
    run = RunDir(run_dir)
    seed = DatasetManifest.load(run.seed_dir / "artifact.json")
    assert_generation_complete(run, 0, seed.n_frames)

    ran = _tasks_ran(log)
    lab = LabelingResult.load(run.artifact_path(0, "label"))
    n_walkers = len(TINY["explore"]["walkers"])
    by_name = {name: [r for r in ran if r["key"].startswith(name)] for name in SUBMITTED}
    assert len(by_name["walker_task"]) == n_walkers, ran
    assert len(by_name["label_job_task"]) == lab.n_ok + lab.n_failed, ran
    assert all(r["finish"] == "memory" for r in ran), ran
    assert {r["pid"] for r in ran}.isdisjoint({os.getpid()}), "tasks ran in the flow process"


def test_flow_on_dask_slurm_workers(harness, local_slurm: LocalSlurm, tmp_path: Path) -> None:  # noqa: F811
    """dask-jobqueue SLURMCluster: Dask workers are Slurm jobs; the flow connects by address."""
    dask_jobqueue = pytest.importorskip("dask_jobqueue", reason="needs dask-jobqueue (dask extra)")
    from distributed import Client, get_task_stream

    from flows.al import active_learning

    run_dir = tmp_path / "run"
    with dask_jobqueue.SLURMCluster(
        cores=1, processes=1, memory="2GB", walltime="00:20:00", queue="debug",
        job_name="eip-dask", python=sys.executable, log_directory=str(tmp_path / "dask-logs"),
        scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
        worker_extra_args=["--host", "127.0.0.1"], n_workers=2,
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=300)
        slurm_jobs = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
        assert all(slurm_jobs.values()), f"workers not inside Slurm jobs: {slurm_jobs}"
        with get_task_stream(client) as stream:
            out = active_learning(config=dask_config(dask_address=cluster.scheduler_address),
                                  run_dir=str(run_dir))
        # Both worker jobs are alive in the local Slurm while the cluster is up.
        queued = local_slurm.cmd("squeue", "-h", "-n", "eip-dask", "-o", "%i|%T").stdout.split()
        assert sorted(q.split("|")[0] for q in queued) == sorted(slurm_jobs.values())
        assert {q.split("|")[1] for q in queued} == {"RUNNING"}
    assert out["generations_done"] == 1
    run = RunDir(run_dir)
    seed = DatasetManifest.load(run.seed_dir / "artifact.json")
    assert_generation_complete(run, 0, seed.n_frames)
    done = [t for t in stream.data if str(t["key"]).startswith(SUBMITTED)]
    lab = LabelingResult.load(run.artifact_path(0, "label"))
    assert len(done) == len(TINY["explore"]["walkers"]) + lab.n_ok + lab.n_failed, stream.data
    assert {t["worker"] for t in done} <= set(slurm_jobs), "a task ran outside the Slurm workers"
