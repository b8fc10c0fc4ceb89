"""Train eIP on the real revPBE0-D3 water frames and report accuracy and uncertainty quality.

The 111 frames are consecutive MD snapshots, so a random split would leak near-duplicates
into validation/test. Frames are split in time instead: the first 80 % train, the next
10 % validate (early stopping), the last 10 % test (reported, never used for training).

    python bench/train_water_dft.py --features 32 --interactions 2 --max-time 1200

Writes bench/results/train_water_dft.json (metrics, settings, machine info).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from summarize import machine_info  # bench/ is on sys.path when run as a script

from eip_al.calculator import EIPCalculator
from eip_al.config import LossConfig, ModelConfig, TrainConfig
from eip_al.io import read_frames
from eip_al.model.evaluation import evaluation_metrics
from eip_al.train import train_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "water-dft" / "water_revPBE0-D3_cnnp-gen1.extxyz"
RESULTS = Path(__file__).resolve().parent / "results"


def time_split(n: int) -> tuple[slice, slice, slice]:
    """80 / 10 / 10 % contiguous blocks in time order."""
    n_train, n_valid = int(0.8 * n), int(0.1 * n)
    return slice(0, n_train), slice(n_train, n_train + n_valid), slice(n_train + n_valid, n)


def rotation_sensitivity(calc: EIPCalculator, frames: list, n_rotations: int = 3) -> dict[str, float]:
    """How much σ changes when a frame is rotated (the per-component head is not equivariant)."""
    atom_rel, config_rel = [], []
    for k, atoms in enumerate(frames):
        calc.calculate(atoms)
        sigma, config = np.copy(calc.results["uncertainty"]), calc.results["config_uncertainty"]
        for r in range(n_rotations):
            rot = Rotation.random(random_state=1000 * k + r).as_matrix()
            turned = atoms.copy()
            turned.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
            turned.positions = atoms.positions @ rot.T
            calc.calculate(turned)
            atom_rel.append(np.abs(calc.results["uncertainty"] / sigma - 1))
            config_rel.append(abs(calc.results["config_uncertainty"] / config - 1))
    rel = np.concatenate(atom_rel)
    return {
        "atom_sigma_rel_change_median": float(np.median(rel)),
        "atom_sigma_rel_change_p95": float(np.quantile(rel, 0.95)),
        "atom_sigma_rel_change_max": float(rel.max()),
        "config_sigma_rel_change_max": float(max(config_rel)),
        "n_rotations_per_frame": n_rotations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--interactions", type=int, default=2)
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--max-time", type=float, default=1200.0, help="training time budget, s")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--q", type=float, default=0.5)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--w-energy", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep last.pt here (resumable)")
    parser.add_argument("--out", type=Path, default=RESULTS / "train_water_dft.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    frames = read_frames(DATA)
    frames.sort(key=lambda a: a.info.get("ipi_step", 0))
    tr, va, te = time_split(len(frames))
    model_cfg = ModelConfig(n_features=args.features, n_interactions=args.interactions, cutoff=args.cutoff)
    train_cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_time_s=args.max_time,
        lr_patience=8, early_stopping_patience=40,
        loss=LossConfig(q=args.q, lam=args.lam, w_energy=args.w_energy),
    )
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="eip-water-dft-"))
    t0 = time.perf_counter()
    result = train_model(frames[tr], frames[va], model_cfg, train_cfg, work)
    train_s = time.perf_counter() - t0

    calc = EIPCalculator(result.checkpoint, device="auto")
    test = frames[te]
    t1 = time.perf_counter()
    preds = calc.predict_frames(test, batch_size=4)
    predict_s = time.perf_counter() - t1
    metrics = evaluation_metrics(test, preds)
    f_test = np.concatenate([a.get_forces() for a in test])
    report = {
        "data": str(DATA.name),
        "split": {"train": len(frames[tr]), "valid": len(frames[va]), "test": len(test), "kind": "contiguous in time"},
        "model": model_cfg.model_dump(),
        "train": train_cfg.model_dump(mode="json"),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_reason": result.stopped_reason,
        "train_wall_s": result.wall_time_s,  # all sessions of a resumed run
        "this_session_s": train_s,
        "valid": result.valid.model_dump(),
        "test": metrics.model_dump(),
        "zero_force_mae_test": float(np.mean(np.abs(f_test))),
        "predict_s_per_frame": predict_s / len(test),
        "sigma_rotation_sensitivity_test": rotation_sensitivity(calc, test),
        "machine": machine_info(device="cuda" if torch.cuda.is_available() else "cpu"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    keys = ("epochs_run", "stopped_reason", "test", "zero_force_mae_test", "sigma_rotation_sensitivity_test")
    print(json.dumps({k: report[k] for k in keys}, indent=2))


if __name__ == "__main__":
    main()
