"""Training cost and accuracy per batch size and mixed precision: s/epoch and valid force MAE.

The default-size eIP model on the real revPBE0-D3 water frames, for each batch size × `train.amp`.

Issue #23 (item 3): larger batches and bf16/fp16 autocast only where they keep accuracy. Every
run starts from the same seeded weights and shuffles the same way (`train.seed`) and trains the
same number of epochs with `eip_al.fit.fit`, the loop the AL pipeline uses, so runs differ only
in batch size and precision. Frames are split in time as in bench/train_water_dft.py (first
80 % train, next 10 % validation; the last 10 % are not used here).

Per run: median seconds per epoch over the epochs after the first (the first holds the CUDA
and autocast warm-up; it is reported apart), both for the training pass alone (`train_s`) and
for the whole epoch including the full-precision validation (`epoch_s`), and the validation
force MAE after the last epoch and at the best epoch, with the per-epoch history. With the same
learning rate a larger batch takes fewer steps per epoch; `--lr-scaling sqrt` compensates in part.

Run: python bench/bench_train.py [--device cpu|cuda] [--epochs 20] [--batch-sizes 4 16] [--amp off bf16] [--frames 111]

Writes bench/results/train.json (train-cuda.json on a GPU): settings, per-run results, machine
info and commit.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from summarize import (  # bench/ is on sys.path when run as a script
    git_commit,
    machine_info,
    now_iso,
)
from train_water_dft import DATA

from eip_al.atomic import atomic_write_text
from eip_al.config import LossConfig, ModelConfig, TrainConfig
from eip_al.fit import EVIDENTIAL, fit, job_fingerprint
from eip_al.io import read_frames
from eip_al.model.checkpoint import resolve_device
from eip_al.train import _new_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# where ../shared is absent (a GPU machine given only the checkout): a copy in bench/data (gitignored)
LOCAL_DATA = HERE / "data" / "water-dft" / DATA.name


def data_file(path: Path | None) -> Path:
    """`--data`, else ../shared/data/water-dft, else its copy under bench/data/water-dft/."""
    for candidate in ([path] if path is not None else [DATA, LOCAL_DATA]):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"DFT water frames not found ({path or f'{DATA} or {LOCAL_DATA}'}); "
                     f"copy {DATA.name} to {LOCAL_DATA.parent}/ or pass --data")


def split(n: int) -> tuple[slice, slice]:
    """Train and validation blocks in time order: 80 % / 10 % (at least one validation frame)."""
    n_valid = max(1, int(0.1 * n))
    n_train = min(int(0.8 * n), n - n_valid)
    if n_train < 1:
        raise SystemExit(f"--frames {n}: need at least 2 frames (one train, one validation)")
    return slice(0, n_train), slice(n_train, n_train + n_valid)


def lr_for(batch_size: int, base_lr: float, base_batch: int, scaling: str) -> float:
    factor = {"none": 1.0, "sqrt": math.sqrt(batch_size / base_batch), "linear": batch_size / base_batch}[scaling]
    return base_lr * factor


def one_run(train: list, valid: list, model_cfg: ModelConfig, train_cfg: TrainConfig, work: Path) -> dict[str, Any]:
    device = resolve_device(train_cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fitted = fit(lambda: _new_model(train, model_cfg, None, device), train, valid, EVIDENTIAL, train_cfg, work,
                 job_fingerprint(train, valid, model_cfg, train_cfg, None), progress=False)
    total_s = time.perf_counter() - t0
    hist = fitted.state["history"]
    later = hist[1:] or hist  # the first epoch holds the warm-up
    best = min(hist, key=lambda r: r["valid_loss"])
    peak_mib = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {
        "batch_size": train_cfg.batch_size,
        "amp": train_cfg.amp,
        "lr": train_cfg.lr,
        "epochs_run": len(hist),
        "steps_per_epoch": math.ceil(len(train) / train_cfg.batch_size),
        "train_s_per_epoch": statistics.median(r["train_s"] for r in later),
        "epoch_s": statistics.median(r["wall_s"] for r in later),
        "first_epoch_s": hist[0]["wall_s"],
        "total_s": total_s,  # with data preparation and checkpoint writes
        "valid_force_mae_last": hist[-1]["force_mae"],
        "valid_force_mae_best": best["force_mae"],
        "best_epoch": int(best["epoch"]),
        "valid_energy_mae_per_atom_last": hist[-1]["energy_mae_per_atom"],
        "peak_gpu_mib": peak_mib,
        "history": [{k: r.get(k) for k in ("epoch", "train_loss", "valid_loss", "force_mae", "train_s", "wall_s")}
                    for r in hist],
    }


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--amp", nargs="+", choices=["off", "bf16", "fp16"], default=["off", "bf16"])
    ap.add_argument("--data", type=Path, default=None, help=f"the extxyz (default: ../shared, else {LOCAL_DATA.relative_to(HERE.parent)})")
    ap.add_argument("--frames", type=int, default=None, help="use the first N frames in time (default: all 111)")
    ap.add_argument("--features", type=int, default=ModelConfig().n_features)
    ap.add_argument("--interactions", type=int, default=ModelConfig().n_interactions)
    ap.add_argument("--cutoff", type=float, default=ModelConfig().cutoff)
    ap.add_argument("--lr", type=float, default=2e-3, help="learning rate at the smallest batch size")
    ap.add_argument("--lr-scaling", choices=["none", "sqrt", "linear"], default="none",
                    help="scale the lr with batch size / smallest batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=None, help="default results/train.json (train-cuda.json on a GPU)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    out_path = args.out or RESULTS / ("train.json" if args.device == "cpu" else f"train-{args.device}.json")

    data = data_file(args.data)
    frames = read_frames(data)
    frames.sort(key=lambda a: a.info.get("ipi_step", 0))
    frames = frames[: args.frames] if args.frames else frames
    tr, va = split(len(frames))
    train, valid = frames[tr], frames[va]
    model_cfg = ModelConfig(n_features=args.features, n_interactions=args.interactions, cutoff=args.cutoff)
    # the loss settings bench/train_water_dft.py uses on these frames
    loss_cfg = LossConfig(q=0.5, lam=0.1, w_energy=0.1)
    base_batch = min(args.batch_sizes)
    runs: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "benchmark": "train",
        "data": data.name,
        "split": {"train": len(train), "valid": len(valid), "kind": "contiguous in time", "n_atoms": len(frames[0])},
        "settings": {
            "device": args.device, "epochs": args.epochs, "batch_sizes": args.batch_sizes, "amp": args.amp,
            "lr": args.lr, "lr_scaling": args.lr_scaling, "seed": args.seed, "reference": f"batch {base_batch}, amp off",
            "model": model_cfg.model_dump(), "loss": loss_cfg.model_dump(),
        },
        "complete": False,  # written after every run: a run cut short by a time limit keeps the finished ones
        "runs": runs,
        "machine": machine_info(device=args.device),
        "date": now_iso(),
        "git": git_commit(),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eip-bench-train-") as tmp:
        for batch_size in args.batch_sizes:
            for amp in args.amp:
                train_cfg = TrainConfig(
                    epochs=args.epochs, batch_size=batch_size, lr=lr_for(batch_size, args.lr, base_batch, args.lr_scaling),
                    lr_patience=8, early_stopping_patience=10**6, device=args.device, amp=amp, seed=args.seed,
                    loss=loss_cfg,
                )
                run = one_run(train, valid, model_cfg, train_cfg, Path(tmp) / f"b{batch_size}-{amp}")
                runs.append(run)
                print(f"batch {batch_size:3d}  amp {amp:4s}  {run['train_s_per_epoch']:.3f} s/epoch train, "
                      f"{run['epoch_s']:.3f} s/epoch with validation  valid F-MAE {run['valid_force_mae_last']:.4f} "
                      f"(best {run['valid_force_mae_best']:.4f} at epoch {run['best_epoch']}) eV/Å", flush=True)
                atomic_write_text(out_path, json.dumps(result, indent=2) + "\n")
    reference = next((r for r in runs if r["batch_size"] == base_batch and r["amp"] == "off"), None)
    if reference is not None:
        for r in runs:
            r["speedup_vs_reference"] = reference["train_s_per_epoch"] / r["train_s_per_epoch"]
            r["force_mae_ratio_vs_reference"] = r["valid_force_mae_last"] / reference["valid_force_mae_last"]
    result["complete"] = True
    atomic_write_text(out_path, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")
    return out_path


if __name__ == "__main__":
    main()
