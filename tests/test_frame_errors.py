"""Unusable frames give one clear line naming file and frame; ASE-rewritten seed data is accepted."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from typer.testing import CliRunner

from eip_al.cli import app
from eip_al.config import config_from_mapping
from eip_al.data import write_dataset
from eip_al.io import FrameError, read_frames, write_frames
from eip_al.label import get_labeler
from eip_al.model.checkpoint import save_checkpoint
from eip_al.rundir import RunDir
from eip_al.seed import make_seed
from tests.model_fixtures import labelled_water_frames, tiny_model, torch_threads, water_box

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


def _one_error_line(res, *needles: str) -> str:
    """The run failed with exit 2 and printed exactly one line, containing every needle."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _overlapping(tmp_path):
    """Two good frames, then one whose atom 5 sits on atom 0's periodic image."""
    frames = labelled_water_frames(3, seed=3)
    frames[2].positions[5] = frames[2].positions[0] + frames[2].cell[0]
    path = tmp_path / "overlap.extxyz"
    write_frames(path, frames)
    return path


def _unknown_element(tmp_path):
    path = tmp_path / "qq.extxyz"
    write_frames(path, [water_box(2, box=4.0), water_box(2, box=4.0, seed=1)])
    lines = path.read_text().splitlines(keepends=True)
    second = int(lines[0]) + 2  # first line of frame 1
    lines[second + 2] = "Qq" + lines[second + 2][1:]
    path.write_text("".join(lines))
    return path


def test_read_frames_names_file_frame_and_problem(tmp_path) -> None:
    with pytest.raises(FrameError, match=r"overlap.extxyz: frame 2: atoms 0 and 5 overlap \(0.000 Å apart"):
        read_frames(_overlapping(tmp_path))
    with pytest.raises(FrameError, match=r"qq.extxyz: frame 1: unknown element symbol 'Qq'"):
        read_frames(_unknown_element(tmp_path), require_labels=False)
    (tmp_path / "empty.extxyz").write_text("")
    with pytest.raises(FrameError, match=r"empty.extxyz: empty file \(no frames\)"):
        read_frames(tmp_path / "empty.extxyz")


def test_predict_refuses_overlapping_atoms_and_non_finite_predictions(tmp_path, monkeypatch) -> None:
    model = save_checkpoint(tmp_path / "m.pt", tiny_model())
    out = tmp_path / "out.extxyz"
    res = runner.invoke(app, ["predict", str(model), str(_overlapping(tmp_path)), str(out)])
    _one_error_line(res, "overlap.extxyz: frame 2: atoms 0 and 5 overlap")
    assert not out.exists()
    res = runner.invoke(app, ["predict", str(model), str(_unknown_element(tmp_path)), str(out)])
    _one_error_line(res, "qq.extxyz: frame 1: unknown element symbol 'Qq'")

    from eip_al.calculator import EIPCalculator

    real = EIPCalculator.predict_frames

    def nan_sigma(self, frames, **kwargs):
        preds = real(self, frames, **kwargs)
        preds[1]["uncertainty"] = np.full_like(preds[1]["uncertainty"], np.nan)
        return preds

    monkeypatch.setattr(EIPCalculator, "predict_frames", nan_sigma)
    good = tmp_path / "good.extxyz"
    write_frames(good, [water_box(2, box=4.0, seed=s) for s in range(2)])
    res = runner.invoke(app, ["predict", str(model), str(good), str(out)])
    _one_error_line(res, "good.extxyz: frame 1: the model predicted a non-finite uncertainty")
    assert not out.exists()


def test_train_on_overlapping_atoms_is_one_line(tmp_path) -> None:
    res = runner.invoke(app, ["train", str(_overlapping(tmp_path)), "--out", str(tmp_path / "m.pt"),
                              "--epochs", "1"])
    _one_error_line(res, "overlap.extxyz: frame 2", "overlap")
    assert not (tmp_path / "m.pt").exists()


def test_label_empty_file_exits_non_zero(tmp_path) -> None:
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    res = runner.invoke(app, ["label", str(empty), str(tmp_path / "out.extxyz")])
    _one_error_line(res, "empty.extxyz: empty file")
    assert not (tmp_path / "out.extxyz").exists()


def _eip_al_dataset_rewritten_by_ase(tmp_path, cfg) -> tuple:
    """A seed dataset written by eip-al (job ids like '000003'), then read and written by ASE."""
    frames = labelled_water_frames(5, seed=7)
    for k, atoms in enumerate(frames):
        atoms.info.update(source="seed", job_id=f"{k:06d}", labeler="mock")
    src = RunDir(tmp_path / "src")
    src.init(cfg)
    theory = get_labeler(cfg.labeler).theory()
    m = write_dataset(frames, src.seed_dir, -1, theory, cfg.merge, src)
    user = tmp_path / "user.extxyz"
    ase.io.write(user, ase.io.read(src.abs(m.dataset_extxyz), ":"), format="extxyz")
    return user, m


def test_seed_from_a_dataset_rewritten_by_plain_ase_is_accepted(tmp_path) -> None:
    base = {"name": "t", "system": {"kind": "water", "n_molecules": 8}, "labeler": {"kind": "mock"}}
    user, original = _eip_al_dataset_rewritten_by_ase(tmp_path, config_from_mapping(base))
    assert "job_id=000003" in user.read_text()  # unprotected: ASE reads it back as the int 3
    cfg = config_from_mapping({**base, "seed_data": {"source": "file", "file": str(user)}})
    run = RunDir(tmp_path / "run")
    run.init(cfg)
    seed = make_seed(cfg, run)
    assert seed.n_frames == 5 and seed.split_counts == original.split_counts
    assert seed.theory.key() == original.theory.key()  # the frames' theory key matched the labeler
    frames = read_frames(run.abs(seed.dataset_extxyz))
    assert [a.info["job_id"] for a in frames] == ["0", "1", "2", "3", "4"]  # str (leading zeros lost)

    text = user.read_text().replace("split=train", "split=banana", 1)
    (tmp_path / "bad.extxyz").write_text(text)
    bad_cfg = config_from_mapping({**base, "seed_data": {"source": "file", "file": str(tmp_path / "bad.extxyz")}})
    run2 = RunDir(tmp_path / "run2")
    run2.init(bad_cfg)
    with pytest.raises(FrameError, match=r"bad.extxyz: frame \d+ .*split 'banana'"):
        make_seed(bad_cfg, run2)
