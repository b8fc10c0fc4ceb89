"""`eip-al train | predict | evaluate` end to end on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.io import read
from typer.testing import CliRunner

from eip_al.cli import app
from eip_al.io import write_frames
from tests.model_fixtures import TINY, labelled_water_frames, torch_threads, water_box

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data.extxyz"
    write_frames(data, labelled_water_frames(10, seed=11))
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"model": TINY, "train": {"lr": 5e-3, "batch_size": 4, "device": "cpu"}}))
    with torch_threads(1):
        res = runner.invoke(app, ["train", str(data), "--out", str(root / "m.pt"), "--epochs", "3",
                                  "--config", str(config)])
    assert res.exit_code == 0, res.output
    return root, res.output


def test_train_writes_model_and_resumable_work_dir(trained) -> None:
    root, output = trained
    assert (root / "m.pt").is_file()
    assert (root / "m.train" / "last.pt").is_file()
    assert len((root / "m.train" / "metrics.csv").read_text().splitlines()) == 4
    assert "force_mae" in output and "trained on 9 frames" in output


def test_predict_unlabelled_and_labelled(trained, tmp_path) -> None:
    root, _ = trained
    plain = [water_box(8, seed=s) for s in range(3)]
    write_frames(tmp_path / "in.extxyz", plain)
    res = runner.invoke(app, ["predict", str(root / "m.pt"), str(tmp_path / "in.extxyz"), str(tmp_path / "out.extxyz")])
    assert res.exit_code == 0, res.output
    frames = read(tmp_path / "out.extxyz", ":")
    assert len(frames) == 3
    for a in frames:
        n = len(a)
        assert a.get_forces().shape == (n, 3) and np.isfinite(a.get_potential_energy())
        assert a.arrays["uncertainty"].shape == (n,)
        assert a.arrays["uncertainty_components"].shape == (n, 3)
        assert a.arrays["aleatoric_components"].shape == (n, 3)
        assert a.info["config_uncertainty"] == pytest.approx(a.arrays["uncertainty"].mean(), rel=1e-6)
    labelled = labelled_water_frames(2, seed=5)
    write_frames(tmp_path / "lab.extxyz", labelled)
    res = runner.invoke(app, ["predict", str(root / "m.pt"), str(tmp_path / "lab.extxyz"), str(tmp_path / "o2.extxyz")])
    assert res.exit_code == 0, res.output
    for src, a in zip(labelled, read(tmp_path / "o2.extxyz", ":"), strict=True):
        assert a.get_potential_energy() == pytest.approx(src.get_potential_energy())  # labels kept
        assert np.allclose(a.get_forces(), src.get_forces())
        assert "energy_pred" in a.info and a.arrays["forces_pred"].shape == (len(a), 3)


def test_evaluate_prints_and_writes_metrics(trained, tmp_path) -> None:
    root, _ = trained
    write_frames(tmp_path / "test.extxyz", labelled_water_frames(3, seed=21))
    res = runner.invoke(app, ["evaluate", str(root / "m.pt"), str(tmp_path / "test.extxyz"),
                              "--out", str(tmp_path / "metrics.json")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_frames"] == 3 and metrics["force_mae"] > 0
    assert metrics["force_rmse"] >= metrics["force_mae"]
    assert "spearman_atom" in res.output


def test_user_errors_are_one_clear_line(trained, tmp_path) -> None:
    root, _ = trained
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    write_frames(tmp_path / "in.extxyz", [water_box(2, box=4.0)])
    res = runner.invoke(app, ["predict", str(bad), str(tmp_path / "in.extxyz"), str(tmp_path / "o.extxyz")])
    assert res.exit_code == 2 and "bad.pt" in res.output and "Traceback" not in res.output
    carbon = water_box(2, box=4.0) + Atoms("C", positions=[[1.0, 1.0, 1.0]])
    write_frames(tmp_path / "c.extxyz", [carbon])
    res = runner.invoke(app, ["predict", str(root / "m.pt"), str(tmp_path / "c.extxyz"), str(tmp_path / "o.extxyz")])
    assert res.exit_code == 2 and "['C']" in res.output and "frame 0" in res.output
    assert not (tmp_path / "o.extxyz").exists()
    res = runner.invoke(app, ["evaluate", str(root / "m.pt"), str(tmp_path / "in.extxyz")])
    assert res.exit_code == 2 and "missing energy" in res.output
