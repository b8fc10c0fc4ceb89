"""The engine-free path: seed + one generation through eip_al.pipeline, no Prefect."""


from test_flows import assert_generation_complete, tiny_config

from eip_al import pipeline
from eip_al.config import config_from_mapping
from eip_al.rundir import RunDir
from eip_al.schemas import DatasetManifest, GenerationRecord


def test_run_generation_without_prefect(tmp_path):
    cfg = config_from_mapping(tiny_config(generations=1))
    run = RunDir(tmp_path / "run")
    run.init(cfg)
    seed = pipeline.seed_step(cfg, run)
    assert pipeline.run_generation(cfg, run, 0) is None  # not converged after one generation
    assert_generation_complete(run, 0, seed.n_frames)
    rec = GenerationRecord.load(run.gen_dir(0) / "generation.json")
    assert [s.step for s in rec.steps] == ["train", "explore", "select", "label", "merge", "report"]
    # a second call redoes nothing: every artifact is already valid
    before = {p: p.stat().st_mtime_ns for p in run.gen_dir(0).glob("*/artifact.json")}
    pipeline.run_generation(cfg, run, 0)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert DatasetManifest.load(run.artifact_path(0, "merge")).n_frames >= seed.n_frames
