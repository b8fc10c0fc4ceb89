"""The models: the eIP model (PaiNN backbone + evidential head, docs/eip-method §1–§4) and the
ensemble of head-less PaiNNs, two uncertainty sources behind one interface (sources.py).

Public API: `EIPModel`, `EnsembleModel`, `PlainPaiNN`, `UncertaintySource`, `ModelSpec`, `fit_element_energies`, `load_checkpoint`,
`save_checkpoint`, `resolve_device`, `CheckpointError`, `ElementError`, `BiasFn`; the loss
in `eip_al.model.loss`, uncertainty helpers in `eip_al.model.uncertainty`, the ASE
calculator in `eip_al.calculator`. Names are imported lazily so that importing the error
classes (as the CLI does at start-up) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from eip_al.model.errors import CheckpointError, ElementError

_LAZY = {
    "BiasFn": "eip_al.model.eip",
    "EIPModel": "eip_al.model.eip",
    "EnsembleModel": "eip_al.model.ensemble",
    "PlainPaiNN": "eip_al.model.eip",
    "UncertaintySource": "eip_al.model.sources",
    "ModelSpec": "eip_al.model.eip",
    "fit_element_energies": "eip_al.model.eip",
    "load_checkpoint": "eip_al.model.checkpoint",
    "save_checkpoint": "eip_al.model.checkpoint",
    "resolve_device": "eip_al.model.checkpoint",
}

__all__ = ["CheckpointError", "ElementError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eip_al.model' has no attribute {name!r}")
