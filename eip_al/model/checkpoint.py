"""Model checkpoints: state_dict + model spec + element energies + format version (+ kind).

`kind` names the model class: absent for the eIP model (every checkpoint before ensembles
loads as evidential), "plain" for one head-less PaiNN, "ensemble" for all members of an
ensemble in one file (their weights under ``members.<k>.``, `n_members`).

Files are written atomically and read with `torch.load(weights_only=True)` (no arbitrary
pickles). Every failure to load raises `CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

import eip_al
from eip_al.atomic import atomic_write_bytes
from eip_al.config import ConfigError
from eip_al.model.eip import EIPModel, ModelSpec, PlainPaiNN
from eip_al.model.ensemble import EnsembleModel
from eip_al.model.errors import CheckpointError
from eip_al.uq import Calibration, calibration_from_meta

FORMAT = "eip-al-model"
FORMAT_VERSION = 1
AnyModel = EIPModel | PlainPaiNN | EnsembleModel


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' → CUDA when available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available (use 'auto' or 'cpu')")
    return torch.device(device)


def checkpoint_payload(model: AnyModel, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dict stored in a checkpoint (tensors on CPU; only types weights_only accepts)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "eip_al_version": eip_al.__version__,
        "spec": model.spec.to_dict(),
        "dtype": str(model.dtype).removeprefix("torch."),
        "element_energies": model.element_energies.tolist(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    if isinstance(model, EnsembleModel):
        payload.update(kind="ensemble", n_members=len(model.members))
    elif not isinstance(model, EIPModel):
        payload["kind"] = "plain"
    return payload


def save_checkpoint(path: Path, model: AnyModel, extra: dict[str, Any] | None = None) -> Path:
    """Write the model atomically to `path`; `extra` holds plain metadata (numbers, strings)."""
    buf = io.BytesIO()
    torch.save(checkpoint_payload(model, extra), buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def read_payload(path: Path | str) -> dict[str, Any]:
    """Load and check the raw checkpoint dict (weights_only); CheckpointError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (not a file)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, foreign pickle ...
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an eip-al model checkpoint (no '{FORMAT}' format tag)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')!r}, "
            f"this eip-al reads version {FORMAT_VERSION}"
        )
    for key in ("spec", "state_dict", "element_energies", "dtype"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    return payload


def load_calibration(checkpoint: Path | str) -> Calibration | None:
    """The calibration of a checkpoint file (reads the payload, builds no model)."""
    return calibration_from_meta(read_payload(checkpoint), str(checkpoint))


def model_from_payload(payload: dict[str, Any], path: Path | str) -> AnyModel:
    """Build the model a payload describes (its `kind`) and load its weights (strict)."""
    try:
        spec = ModelSpec.from_dict(payload["spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model spec in checkpoint: {exc}") from None
    kind, ee = payload.get("kind", "eip"), payload["element_energies"]
    model: AnyModel
    if kind == "eip":
        model = EIPModel(spec, ee)
    elif kind == "plain":
        model = PlainPaiNN(spec, ee)
    elif kind == "ensemble" and isinstance(payload.get("n_members"), int) and payload["n_members"] >= 2:
        model = EnsembleModel([PlainPaiNN(spec, ee) for _ in range(payload["n_members"])])
    else:
        raise CheckpointError(f"{path}: unknown model kind {kind!r} (or an ensemble without n_members >= 2)")
    dtype = getattr(torch, str(payload["dtype"]), None)
    if dtype not in (torch.float32, torch.float64):
        raise CheckpointError(f"{path}: unsupported dtype {payload['dtype']!r}")
    model = model.to(dtype)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not match the model config stored in the checkpoint: {exc}"
        ) from None
    return model


def load_checkpoint(path: Path | str, device: str | torch.device = "auto") -> tuple[AnyModel, dict[str, Any]]:
    """Load a checkpoint → (model in eval mode on `device`, metadata dict without weights)."""
    payload = read_payload(path)
    model = model_from_payload(payload, path).to(resolve_device(device))
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    meta["element_energies"] = model.element_energy_dict()
    return model, meta
