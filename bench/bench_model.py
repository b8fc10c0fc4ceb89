"""Cost of the evidential head: plain PaiNN (E + F) vs eIP (E + F + σ) on 288-atom water, CPU or GPU.

All timings use the same backbone, weights and prebuilt graph; "plain" skips the head and
the σ reduction, so the ratio is the head's overhead (target eIP ≤ 1.10 × plain). eIP is
the default symmetric head; also timed: the symmetric head with its feature novelty fitted
(on three other boxes), the paper's per-component head, eIP with a UDD bias (E_bias forces
from the same forward pass) and one full `EIPCalculator` MD step (neighbor list with skin +
conversion to numpy).

    python bench/bench_model.py [--features 128 --interactions 3 --threads 1 2]
    python bench/bench_model.py --device cuda --batch 8    # GPU, float32, + 8 frames batched

`--batch N` also times N boxes in one batched pass (unbiased and UDD: what batched walker
replicas run each step). On a GPU every timing ends with a device synchronize.

Writes bench/results/model.json (model-cuda.json on a GPU): min and median wall time (ms) of each variant, and ratios
as the median over repeats of per-repeat ratios (variants run in turn within each repeat,
so a shared machine's changing load affects them alike), plus machine info and load.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule
from summarize import (  # bench/ is on sys.path when run as a script
    git_commit,
    machine_info,
    now_iso,
)

from eip_al.calculator import EIPCalculator
from eip_al.config import ModelConfig
from eip_al.model import EIPModel, ModelSpec, save_checkpoint
from eip_al.model.evaluation import frames_to_graphs
from eip_al.model.neighbors import Graph, SpeciesMap, collate, frame_graph

RESULTS = Path(__file__).resolve().parent / "results"


def water_box(n_molecules: int = 96, density_g_cm3: float = 0.997, seed: int = 0) -> Atoms:
    """Randomly oriented H2O on a jittered cubic grid at the given density (periodic)."""
    rng = np.random.default_rng(seed)
    volume = n_molecules * 18.015 / (density_g_cm3 * 0.602214)  # Å^3
    length = volume ** (1 / 3)
    per_side = int(np.ceil(n_molecules ** (1 / 3)))
    sites = np.array([(a, b, c) for a in range(per_side) for b in range(per_side) for c in range(per_side)])
    sites = sites[rng.choice(len(sites), n_molecules, replace=False)]
    atoms = Atoms(cell=[length] * 3, pbc=True)
    for site in sites:
        m = molecule("H2O")
        m.rotate(rng.uniform(0, 360), rng.normal(size=3))
        m.translate((site + 0.5) * length / per_side + rng.normal(scale=0.1, size=3))
        atoms += m
    return atoms


def plain_painn(model: EIPModel, g: Graph) -> torch.Tensor:
    """Energy + forces with the same backbone, readout and code path, no evidential head."""
    pos = g.positions.detach().requires_grad_(True)
    energy, _, _ = model.energy_and_features(g, pos)
    (grad,) = torch.autograd.grad(energy.sum(), pos)
    return -grad


def sync(device: str) -> None:
    """Wait for queued GPU work (timings must include it); a no-op on CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2, device: str = "cpu"
) -> dict[str, list[float]]:
    """Wall times (ms) of each function, run in turn within every repeat, so all see the
    same machine load (the benchmark machine is shared); ratios are taken per repeat."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - t) * 1e3)
    return times


def summary(ms: list[float]) -> dict[str, float]:
    return {"min_ms": min(ms), "median_ms": statistics.median(ms)}


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over repeats of a/b."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=ModelConfig().n_features)
    parser.add_argument("--interactions", type=int, default=ModelConfig().n_interactions)
    parser.add_argument("--cutoff", type=float, default=ModelConfig().cutoff)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (float32 either way)")
    parser.add_argument("--batch", type=int, default=1, help="also time this many boxes in one pass")
    parser.add_argument("--out", type=Path, help="default results/model.json (model-cuda.json on a GPU)")
    args = parser.parse_args()
    dev = args.device
    out_path = args.out or RESULTS / ("model.json" if dev == "cpu" else f"model-{dev.split(':')[0]}.json")

    atoms = water_box()
    torch.manual_seed(0)
    model = EIPModel(ModelSpec(args.features, args.interactions, args.cutoff, 20, (1, 8)))
    model.eval()
    model.requires_grad_(False)
    g = frame_graph(atoms, SpeciesMap(model.spec.elements), args.cutoff).to(dev, torch.float32)
    batch = collate([frame_graph(water_box(seed=10 + k), SpeciesMap(model.spec.elements), args.cutoff)
                     for k in range(args.batch)]).to(dev, torch.float32)
    novelty = copy.deepcopy(model)
    novelty.fit_novelty(frames_to_graphs([water_box(seed=s) for s in (1, 2, 3)], novelty))
    paper = EIPModel(ModelSpec(args.features, args.interactions, args.cutoff, 20, (1, 8), head="paper"))
    paper.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head.")}, strict=False)
    paper.eval()
    paper.requires_grad_(False)
    checkpoint = save_checkpoint(Path(tempfile.mkdtemp()) / "bench.pt", model)
    model, novelty, paper = model.to(dev), novelty.to(dev), paper.to(dev)

    def bias(sigma: torch.Tensor, n: int) -> torch.Tensor:
        return 2000.0 * (torch.exp(-sigma / (n * 20.0)) - 1.0)

    calc = EIPCalculator(checkpoint, device=dev)
    rng = np.random.default_rng(0)
    md_atoms = atoms.copy()

    def calculator_step() -> None:
        md_atoms.positions += rng.normal(scale=0.005, size=md_atoms.positions.shape)  # an MD-sized move
        calc.calculate(md_atoms, ["energy", "forces"])

    results: dict[str, object] = {
        "system": f"{len(atoms)}-atom water box, {atoms.cell.lengths()[0]:.2f} Å cubic, periodic",
        "n_edges": int(g.edge_i.shape[0]),
        "model": {"n_features": args.features, "n_interactions": args.interactions, "cutoff": args.cutoff,
                  "n_parameters": sum(p.numel() for p in model.parameters()), "dtype": "float32"},
        "device": dev,
        "batch": args.batch,
        "by_threads": {},
    }
    for threads in args.threads:
        torch.set_num_threads(threads)
        fns: dict[str, Callable[[], object]] = {
            "plain_painn_E_F": lambda: plain_painn(model, g),
            "eip_E_F_sigma": lambda: model.predict(g),
            "eip_novelty_E_F_sigma": lambda: novelty.predict(g),
            "eip_paper_head_E_F_sigma": lambda: paper.predict(g),
            "eip_with_udd_bias": lambda: model.predict(g, bias=bias),
            "calculator_md_step": calculator_step,
        }
        if args.batch > 1:
            fns[f"eip_batch{args.batch}"] = lambda: model.predict(batch)
            fns[f"eip_udd_batch{args.batch}"] = lambda: model.predict(batch, bias=bias)
        t = interleaved(fns, args.repeats, device=dev)
        batched = {}
        if args.batch > 1:  # per-frame cost in a batch relative to one frame alone
            batched = {
                "ratio_batch_per_frame_over_single": paired_ratio(t[f"eip_batch{args.batch}"], t["eip_E_F_sigma"])
                / args.batch,
                "ratio_udd_batch_per_frame_over_single": paired_ratio(t[f"eip_udd_batch{args.batch}"],
                                                                      t["eip_with_udd_bias"]) / args.batch,
            }
        results["by_threads"][str(threads)] = {  # type: ignore[index]
            **{name: summary(ms) for name, ms in t.items()},
            **batched,
            "ratio_eip_over_plain": paired_ratio(t["eip_E_F_sigma"], t["plain_painn_E_F"]),
            "ratio_eip_novelty_over_plain": paired_ratio(t["eip_novelty_E_F_sigma"], t["plain_painn_E_F"]),
            "ratio_eip_paper_head_over_plain": paired_ratio(t["eip_paper_head_E_F_sigma"], t["plain_painn_E_F"]),
            "ratio_udd_over_eip": paired_ratio(t["eip_with_udd_bias"], t["eip_E_F_sigma"]),
            "ratio_calculator_step_over_eip": paired_ratio(t["calculator_md_step"], t["eip_E_F_sigma"]),
        }
        print(threads, json.dumps(results["by_threads"][str(threads)], indent=1))  # type: ignore[index]
    results["machine"] = machine_info(device=dev)
    results["date"], results["git"] = now_iso(), git_commit()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
