"""Training on real DFT water (revPBE0-D3, 192 atoms/frame) beats the zero-force predictor."""

from __future__ import annotations

import numpy as np
import pytest

from eip_al.config import ModelConfig, TrainConfig
from eip_al.io import read_frames
from eip_al.model import load_checkpoint
from eip_al.model.evaluation import evaluation_metrics, frames_to_graphs, predict_graphs
from eip_al.train import train_model
from tests.conftest import WATER_DFT
from tests.model_fixtures import torch_threads


@pytest.mark.slow
def test_water_dft_force_error_beats_zero_predictor(tmp_path) -> None:
    """~20 s: a 16-feature model trained for 6 epochs on the first 24 frames reaches a test
    force MAE below half the zero-force MAE (≈ 0.63 eV/Å) on the last 11 frames, which are
    later in the trajectory than every training frame (seeds 0/1/2 gave 0.20/0.19/0.22)."""
    if not WATER_DFT.exists():
        pytest.skip(f"{WATER_DFT} not available")
    frames = read_frames(WATER_DFT)
    frames.sort(key=lambda a: a.info.get("ipi_step", 0))
    train, valid, test = frames[:24], frames[40:45], frames[-11:]
    model_cfg = ModelConfig(n_features=16, n_interactions=2, cutoff=4.0, n_rbf=12)
    train_cfg = TrainConfig(epochs=6, batch_size=1, lr=5e-3, device="cpu", seed=0)
    with torch_threads(1):
        result = train_model(train, valid, model_cfg, train_cfg, tmp_path, progress=False)
        model, _ = load_checkpoint(result.checkpoint, "cpu")
        metrics = evaluation_metrics(test, predict_graphs(model, frames_to_graphs(test, model), batch_size=4))
    zero_mae = float(np.mean(np.abs(np.concatenate([a.get_forces() for a in test]))))
    assert 0.5 < zero_mae < 0.7
    assert metrics.force_mae < 0.5 * zero_mae, (metrics, result.epochs_run)
