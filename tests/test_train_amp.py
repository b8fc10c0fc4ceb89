"""Mixed-precision training (`train.amp`): bf16 autocast of the training forward on CPU
(forces by double backward included), fp32 weights, validation in full precision, the
config errors, and the resume fingerprint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from ase import Atoms
from pydantic import ValidationError

import eip_al.fit as fit_mod
from eip_al.config import (
    ConfigError,
    ModelConfig,
    TrainConfig,
    config_from_mapping,
    is_execution_field,
)
from eip_al.fit import EVIDENTIAL, MSE, MixedPrecision, job_fingerprint, new_plain_model
from eip_al.io import attach_labels
from eip_al.model import load_checkpoint
from eip_al.model.checkpoint import read_payload
from eip_al.train import _new_model, train_model
from tests.model_fixtures import TINY, labelled_water_frames, torch_threads

MODEL = ModelConfig(**TINY)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


def fast_cfg(**kw) -> TrainConfig:
    base = {"epochs": 6, "batch_size": 4, "lr": 5e-3, "device": "cpu", "seed": 1}
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def frames() -> list[Atoms]:
    return labelled_water_frames(12, seed=3)


def test_bf16_training_on_cpu_learns_and_keeps_float32_weights(tmp_path, frames) -> None:
    out = train_model(frames[:8], frames[8:], MODEL, fast_cfg(amp="bf16"), tmp_path / "bf16", progress=False)
    hist = pd.read_csv(out.metrics_csv)
    assert len(hist) == 6 and np.isfinite(hist[["train_loss", "valid_loss", "force_mae"]].to_numpy()).all()
    assert hist["train_loss"].iloc[-2:].mean() < hist["train_loss"].iloc[:2].mean()
    assert hist["force_mae"].iloc[-1] < hist["force_mae"].iloc[0]
    model, _ = load_checkpoint(out.checkpoint, "cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {t.dtype for t in read_payload(out.last_checkpoint)["state_dict"].values()
            if t.is_floating_point()} == {torch.float32}
    assert "grad_scaler" not in read_payload(out.last_checkpoint)["train_state"]  # bf16 needs no scaler
    # autocast really ran in training: the first epoch's loss is close to, but not, fp32's
    ref = pd.read_csv(train_model(frames[:8], frames[8:], MODEL, fast_cfg(epochs=1), tmp_path / "fp32",
                                  progress=False).metrics_csv)
    first, first_ref = hist["train_loss"].iloc[0], ref["train_loss"].iloc[0]
    assert first != first_ref and first == pytest.approx(first_ref, rel=0.05)


@pytest.mark.parametrize("kind", ["evidential", "mse"])
def test_bf16_loss_agrees_with_float32_loss_but_is_not_identical(frames, kind) -> None:
    cfg = fast_cfg(amp="bf16")
    torch.manual_seed(0)
    if kind == "evidential":
        model, objective = _new_model(frames, MODEL, None, torch.device("cpu")), EVIDENTIAL
    else:
        model, objective = new_plain_model(frames, MODEL), MSE
    data = fit_mod._prepare(frames[:4], model, "batch")
    g, e_ref, f_ref = fit_mod._batch(data, [0, 1, 2, 3])
    model.train()
    amp = MixedPrecision(cfg, model)
    loss32, parts32, out32 = objective.loss(model, g, e_ref, f_ref, cfg, True)
    with amp.autocast():
        loss16, parts16, out16 = objective.loss(model, g, e_ref, f_ref, cfg, True)
    assert torch.isfinite(loss16)
    loss16_v, loss32_v = float(loss16.detach()), float(loss32.detach())
    assert loss16_v != loss32_v  # autocast is applied ...
    assert loss16_v == pytest.approx(loss32_v, rel=2e-2)  # ... and keeps the loss
    assert parts16["loss_force"] == pytest.approx(parts32["loss_force"], rel=2e-2)
    # the residual stream, forces and energies stay in the model dtype
    assert out16["forces"].dtype == torch.float32 and out16["energy"].dtype == torch.float64
    f32, f16 = out32["forces"].detach(), out16["forces"].detach()
    assert float((f16 - f32).norm() / f32.norm()) < 5e-2
    # the double backward through the bf16 force graph reaches every weight, in float32
    model.zero_grad()
    amp.step(loss16, model, torch.optim.SGD(model.parameters(), lr=0.0))
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(gr.dtype == torch.float32 and torch.isfinite(gr).all() for gr in grads)


def test_bad_amp_values_are_clear_config_errors(frames) -> None:
    with pytest.raises(ValidationError, match="'off', 'bf16' or 'fp16'"):
        TrainConfig(amp="fp8")
    with pytest.raises(ConfigError, match=r"train\.amp: .*'off', 'bf16' or 'fp16'.*got 'fp32'"):
        config_from_mapping({"train": {"amp": "fp32"}}, "x.yaml")
    with pytest.raises(ConfigError, match="amp 'fp16' needs device 'cuda'"):
        config_from_mapping({"train": {"amp": "fp16", "device": "cpu"}}, "x.yaml")
    assert TrainConfig().amp == "off"
    cpu_model = new_plain_model(frames, MODEL)
    with pytest.raises(ConfigError, match="'fp16' needs a CUDA device"):  # device auto, resolved to CPU
        MixedPrecision(TrainConfig(amp="fp16", device="auto"), cpu_model)
    with pytest.raises(ConfigError, match="needs model.dtype float32 .got float64"):
        MixedPrecision(TrainConfig(amp="bf16"), cpu_model.to(torch.float64))


def _frame(x: float) -> Atoms:
    atoms = Atoms("OH2", positions=[[x, 0, 0], [x + 1, 0, 0], [x, 1, 0]], cell=[5, 5, 5], pbc=True)
    return attach_labels(atoms, -10.0 - x, np.zeros((3, 3)))


def test_amp_is_part_of_the_resume_identity_and_off_keeps_old_fingerprints() -> None:
    def fp(**kw) -> str:
        return job_fingerprint([_frame(0.0)], [_frame(0.5)], ModelConfig(), TrainConfig(**kw), None)

    # the value before train.amp existed: last.pt files of earlier runs must still resume
    assert fp() == fp(amp="off") == "1a89a5f6c56a7b12f27ecb35a069e42b3eaa929431298b35eab06c36a3e5df88"
    assert len({fp(), fp(amp="bf16"), fp(amp="fp16", device="cuda")}) == 3
    assert fp(device="cpu") == fp(device="cuda")  # the device is not (an execution setting)
    assert not is_execution_field("train.amp")  # changing it on a run needs --fork


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_training_on_cuda_uses_a_grad_scaler(tmp_path, frames) -> None:
    cfg = fast_cfg(amp="fp16", device="cuda", epochs=3)
    out = train_model(frames[:8], frames[8:], MODEL, cfg, tmp_path / "fp16", progress=False)
    hist = pd.read_csv(out.metrics_csv)
    assert np.isfinite(hist[["train_loss", "valid_loss"]].to_numpy()).all()
    state = read_payload(out.last_checkpoint)["train_state"]
    assert state["grad_scaler"]["scale"] > 0
    model, _ = load_checkpoint(out.checkpoint, "cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
