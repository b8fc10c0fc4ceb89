"""Checkpoints: exact round trip, and a clear CheckpointError for every kind of bad file."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from eip_al.model import CheckpointError, EIPModel, ModelSpec, load_checkpoint, save_checkpoint
from eip_al.model.checkpoint import checkpoint_payload
from eip_al.model.neighbors import SpeciesMap, frame_graph
from tests.model_fixtures import tiny_model, torch_threads, water_box


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


def test_round_trip_reproduces_predictions(tmp_path) -> None:
    model = tiny_model(3, dtype=torch.float32)
    model.set_element_energies([-13.1, -431.5])
    path = save_checkpoint(tmp_path / "m.pt", model, extra={"epoch": 4})
    loaded, meta = load_checkpoint(path, "cpu")
    assert meta["extra"] == {"epoch": 4}
    assert meta["element_energies"] == pytest.approx({"H": -13.1, "O": -431.5})
    assert loaded.dtype == torch.float32 and not loaded.training
    atoms = water_box(8)
    g = frame_graph(atoms, SpeciesMap(model.spec.elements), model.spec.cutoff).to("cpu", torch.float32)
    a, b = model.predict(g), loaded.predict(g)
    for key in ("energy", "forces", "sigma_components", "aleatoric_components"):
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("head", ["symmetric", "paper"])
def test_head_kind_round_trips_and_old_checkpoints_load_as_paper(tmp_path, head: str) -> None:
    model = tiny_model(2, head=head)
    if head == "symmetric":  # the fitted novelty statistics travel as buffers
        model.head.novelty.reference.fill_(2.0)
    loaded, meta = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model), "cpu")
    assert loaded.spec.head == meta["spec"]["head"] == head
    if head == "symmetric":
        assert loaded.head.novelty.fitted
    old = checkpoint_payload(tiny_model(2, head="paper"))
    del old["spec"]["head"]  # checkpoints written before the symmetric head
    buf = io.BytesIO()
    torch.save(old, buf)
    (tmp_path / "old.pt").write_bytes(buf.getvalue())
    legacy, _ = load_checkpoint(tmp_path / "old.pt", "cpu")
    assert legacy.spec.head == "paper" and set(legacy.state_dict()) == set(old["state_dict"])
    old["spec"]["head"] = "cubist"
    torch.save(old, buf := io.BytesIO())
    (tmp_path / "bad.pt").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="cubist"):
        load_checkpoint(tmp_path / "bad.pt", "cpu")


def test_missing_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


def test_corrupt_and_truncated_files(tmp_path) -> None:
    good = save_checkpoint(tmp_path / "m.pt", tiny_model(0))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match=str(path.name)):
            load_checkpoint(path)


class _Evil:
    def __reduce__(self):
        return (print, ("executed",))


def test_arbitrary_pickles_are_refused(tmp_path, capsys) -> None:
    path = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"format": "eip-al-model", "payload": _Evil()}, buf, pickle_module=pickle)
    path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(path)
    assert "executed" not in capsys.readouterr().out


def test_foreign_torch_file_and_wrong_version(tmp_path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an eip-al model checkpoint"):
        load_checkpoint(foreign)
    payload = checkpoint_payload(tiny_model(0))
    payload["format_version"] = 99
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(old)


def test_weights_not_matching_the_stored_config(tmp_path) -> None:
    payload = checkpoint_payload(tiny_model(0))
    bigger = EIPModel(ModelSpec(n_features=24, n_interactions=2, cutoff=3.5, n_rbf=8, elements=(1, 8)))
    payload["state_dict"] = bigger.state_dict()
    path = tmp_path / "mismatch.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not match the model config"):
        load_checkpoint(path)
