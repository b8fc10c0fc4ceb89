"""bench/bench_campaign.py --quick: the same code as the committed campaign, on a toy scale.

Asserts the structure of the results (every strategy, generation, test set, stability run and
figure is there; the random strategy really ignored σ), never the numbers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from eip_al.model.checkpoint import read_payload
from eip_al.rundir import RunDir
from eip_al.schemas import TrainingResult
from tests.conftest import WATER_DFT
from tests.model_fixtures import torch_threads

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_campaign  # noqa: E402
import summarize  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(not WATER_DFT.exists(), reason="needs ../shared/data/water-dft")
def test_quick_campaign_structure(tmp_path: Path) -> None:
    out = tmp_path / "campaign.json"
    with torch_threads(1):
        result = bench_campaign.main(["--quick", "--work", str(tmp_path / "work"), "--out", str(out),
                                      "--figures", str(tmp_path / "fig")])
    scale = bench_campaign.SCALES["quick"]
    assert out.exists() and result["scale"]["name"] == "quick"
    assert result["same_seed_dataset"] is True
    assert set(result["generations"]) == set(bench_campaign.STRATEGIES)
    for rows in result["generations"].values():
        assert [r["generation"] for r in rows] == list(range(scale.generations))
        for r in rows:
            assert set(r["test"]) == set(bench_campaign.TEST_SETS)
            assert all(math.isfinite(m["force_mae"]) for m in r["test"].values())
            assert len(r["stability"]) == 2 * scale.stability_seeds
            assert {"300K", f"{scale.hot_K:g}K"} == set(r["stable"])
            assert r["n_labels"] > 0 and r["train_wall_s"] is not None
    ref = result["reference_stability"]  # the mock force field itself under the same rules
    assert len(ref["runs"]) == 2 * scale.stability_seeds and {"300K", f"{scale.hot_K:g}K"} <= set(ref)
    assert result["findings"][0].startswith("reference (the mock force field itself")
    assert set(result["eip_vs"]) == {"random", "ensemble", "md"}
    assert all(set(c) == set(bench_campaign.TEST_SETS) for c in result["eip_vs"].values())
    assert result["replicates"] == list(range(scale.replicates))
    for s, rows in result["replicate_summary"].items():  # one replicate: mean = min = max = the run
        for r, g in zip(rows, result["generations"][s], strict=True):
            assert r["hot"]["mean"] == r["hot"]["min"] == g["test"]["hot"]["force_mae"]
    assert {Path(f).name for f in result["figures"]} == {
        "campaign-fig4c.png", "campaign-learning.png", "campaign-stability.png"}
    # random selection: no σ-based rejection in any generation
    for g in range(scale.generations):
        reasons = set(pd.read_csv(tmp_path / "work" / "runs" / "random" / f"gen-{g:03d}" / "select" / "decisions.csv")
                      ["reason"])
        assert not reasons & {"accurate", "failed_band", "label_noise"}
    # strategy (d): the real loop on a 4-member ensemble, its members trained and its cost recorded
    ens = RunDir(tmp_path / "work" / "runs" / "ensemble")
    for g in range(scale.generations):
        payload = read_payload(ens.abs(TrainingResult.load(ens.artifact_path(g, "train")).checkpoint))
        assert payload["kind"] == "ensemble" and payload["n_members"] == bench_campaign.ENSEMBLE_SIZE
    assert all(r["train_wall_s"] > 0 for r in result["generations"]["ensemble"])
    text = summarize.campaign_section("campaign", result)
    assert "F MAE dft_geometries" in text and "| ensemble | 0 |" in text and "Strategy (d) runs the same loop" in text
    assert "Replicate summary" in text and "selection.lo" in text
