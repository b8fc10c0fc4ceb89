"""`eip-al train | predict | evaluate`: the model outside the loop."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from ase import Atoms
from rich.console import Console
from rich.table import Table

from eip_al.cli.app import app, user_errors
from eip_al.config import ALConfig, load_config
from eip_al.io import FrameError, read_frames
from eip_al.schemas import ValidationMetrics

out = Console()


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _metrics_table(metrics: ValidationMetrics, title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    units = {"energy_mae_per_atom": " eV/atom", "force_mae": " eV/Å", "force_rmse": " eV/Å",
             "sigma_mean": " eV/Å", "aleatoric_mean": " eV/Å"}
    for key, value in metrics.model_dump().items():
        shown = "—" if value is None else (str(value) if isinstance(value, int) else f"{value:.4f}")
        table.add_row(key, shown + (units.get(key, "") if value is not None else ""))
    return table


def _refuse_non_finite(preds: list[dict], where: Path) -> None:
    """FrameError for the first frame whose prediction (energy, forces, σ) is NaN or inf."""
    for k, p in enumerate(preds):
        bad = [key for key in ("energy", "forces", "uncertainty", "config_uncertainty")
               if not np.all(np.isfinite(p[key]))]
        if bad:
            raise FrameError(
                f"{where}: frame {k}: the model predicted a non-finite {', '.join(bad)} (NaN or inf); "
                "nothing written"
            )


def _split_for_training(frames: list[Atoms], data: Path, cfg: ALConfig) -> tuple[list[Atoms], list[Atoms]]:
    """Use the frames' own train/valid split when they carry one, else a seeded random split."""
    from eip_al.data import split_frames

    if any("split" in a.info for a in frames):
        parts = split_frames(frames, str(data))
        return parts["train"], parts["valid"]
    if len(frames) < 2:
        raise FrameError(f"{data}: needs at least 2 frames to split off validation (or pass --valid)")
    n_valid = min(len(frames) - 1, max(1, round(cfg.merge.valid_fraction * len(frames))))
    order = np.random.default_rng(cfg.merge.seed).permutation(len(frames))
    valid = set(order[:n_valid].tolist())
    return [a for k, a in enumerate(frames) if k not in valid], [frames[k] for k in sorted(valid)]


@app.command()
@user_errors
def train(
    data: Annotated[Path, typer.Argument(help="Labelled frames (extxyz): energy and forces.")],
    out_model: Annotated[Path, typer.Option("--out", help="Where to write the trained model (.pt).")],
    epochs: Annotated[int | None, typer.Option(min=1, help="Overrides train.epochs.")] = None,
    config: Annotated[Path | None, typer.Option(help="Run config (YAML): its model and train sections.")] = None,
    valid: Annotated[
        Path | None, typer.Option(help="Validation frames; default: DATA's 'split' info or a random split.")
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="last.pt and metrics.csv (default OUT.train/); rerunning resumes.")
    ] = None,
    device: Annotated[Device | None, typer.Option(help="Overrides train.device.")] = None,
) -> None:
    """Train a model (the config's model.uncertainty: eIP or an ensemble) on labelled frames
    (early stopping on the validation frames)."""
    from eip_al.atomic import atomic_write_bytes
    from eip_al.train import TRAINERS

    cfg = load_config(config) if config is not None else ALConfig()
    train_cfg = cfg.train if device is None else cfg.train.model_copy(update={"device": device.value})
    frames = read_frames(data, require_cell=False)
    if valid is not None:
        train_frames, valid_frames = frames, read_frames(valid, require_cell=False)
    else:
        train_frames, valid_frames = _split_for_training(frames, data, cfg)
    work = work_dir or out_model.with_name(out_model.stem + ".train")
    result = TRAINERS[cfg.model.uncertainty](train_frames, valid_frames, cfg.model, train_cfg, work, epochs=epochs)
    atomic_write_bytes(out_model, result.checkpoint.read_bytes())
    out.print(_metrics_table(result.valid, f"validation ({result.n_valid} frames), best epoch {result.best_epoch}"))
    out.print(
        f"trained on {result.n_train} frames for {result.epochs_run} epochs ({result.stopped_reason}, "
        f"{result.wall_time_s:.0f} s on {result.device}, {result.wall_time_s / max(result.epochs_run, 1):.1f} s/epoch); "
        f"model: {out_model}; per-epoch metrics and times (wall_s): "
        f"{result.metrics_csv}"
    )


@app.command()
@user_errors
def predict(
    model: Annotated[Path, typer.Argument(help="A trained model (.pt).")],
    in_file: Annotated[Path, typer.Argument(help="Frames to predict (extxyz or any ASE format).")],
    out_file: Annotated[Path, typer.Argument(help="Output extxyz with predictions and uncertainties.")],
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per batch.")] = 8,
    device: Annotated[Device, typer.Option(help="Where to run the model.")] = Device.auto,
) -> None:
    """Predict energy, forces and uncertainties; labelled inputs keep their labels.

    Per frame: energy (or `energy_pred` if the frame has a label) and `config_uncertainty`
    (info); per atom: forces (or `forces_pred`), `uncertainty`, `uncertainty_components`,
    `aleatoric_components`; for a calibrated model also `calibrated_uncertainty` (per atom)
    and `config_calibrated_uncertainty` (info), expected force errors in eV/Å.
    """
    from eip_al.calculator import EIPCalculator
    from eip_al.io import attach_labels, write_frames

    frames = read_frames(in_file, require_labels=False, require_cell=False)
    calc = EIPCalculator(model, device=device.value)
    preds = calc.predict_frames(frames, batch_size=batch_size, progress=True, where=str(in_file))
    _refuse_non_finite(preds, in_file)
    written = []
    for atoms, p in zip(frames, preds, strict=True):
        results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
        new = atoms.copy()
        if "energy" in results and "forces" in results:
            attach_labels(new, results["energy"], results["forces"])
            new.info["energy_pred"] = p["energy"]
            new.arrays["forces_pred"] = p["forces"]
        else:
            attach_labels(new, p["energy"], p["forces"])
        new.info["config_uncertainty"] = p["config_uncertainty"]
        new.info["model"] = model.name
        new.arrays["uncertainty"] = p["uncertainty"]
        new.arrays["uncertainty_components"] = p["uncertainty_components"]
        new.arrays["aleatoric_components"] = p["aleatoric_components"]
        if "calibrated_uncertainty" in p:  # the checkpoint carries a calibration
            new.arrays["calibrated_uncertainty"] = p["calibrated_uncertainty"]
            new.info["config_calibrated_uncertainty"] = p["config_calibrated_uncertainty"]
        written.append(new)
    write_frames(out_file, written)
    sigma = np.array([p["config_uncertainty"] for p in preds])
    calibrated = (
        f"; expected force error (calibrated): mean "
        f"{np.mean([p['config_calibrated_uncertainty'] for p in preds]):.4f} eV/Å"
        if preds and "config_calibrated_uncertainty" in preds[0] else ""
    )
    out.print(
        f"wrote {len(written)} frames to {out_file}; configuration σ: mean {sigma.mean():.4f}, "
        f"max {sigma.max():.4f} eV/Å{calibrated}"
    )


@app.command()
@user_errors
def evaluate(
    model: Annotated[Path, typer.Argument(help="A trained model (.pt).")],
    labeled: Annotated[Path, typer.Argument(help="Labelled frames (extxyz): energy and forces.")],
    out_json: Annotated[Path | None, typer.Option("--out", help="Also write the metrics as JSON.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per batch.")] = 8,
    device: Annotated[Device, typer.Option(help="Where to run the model.")] = Device.auto,
) -> None:
    """Accuracy and uncertainty quality on labelled frames (docs/eip-method §4)."""
    from eip_al.atomic import atomic_write_text
    from eip_al.calculator import EIPCalculator
    from eip_al.model.evaluation import evaluation_metrics

    frames = read_frames(labeled, require_cell=False)
    calc = EIPCalculator(model, device=device.value)
    preds = calc.predict_frames(frames, batch_size=batch_size, progress=True, where=str(labeled))
    _refuse_non_finite(preds, labeled)
    metrics = evaluation_metrics(frames, preds)
    out.print(_metrics_table(metrics, f"{model.name} on {labeled}"))
    if out_json is not None:
        atomic_write_text(out_json, metrics.model_dump_json(indent=2) + "\n")
        out.print(f"metrics written to {out_json}")
