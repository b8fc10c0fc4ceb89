"""Shared test settings. `WATER_DFT` is the real DFT dataset in ../shared beside the repo."""

import logging
import os
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WATER_DFT = SHARED / "data" / "water-dft" / "water_revPBE0-D3_cnnp-gen1.extxyz"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect's test server logs "Stopping temporary server" from an exit hook, after pytest has
# closed the captured streams; without this every run ends with a "--- Logging error ---" dump.
logging.raiseExceptions = False
