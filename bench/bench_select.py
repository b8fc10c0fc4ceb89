"""Benchmark: select 1000 of 10^6 synthetic candidates with `eip_al.select.select_pool`.

Target (issue 6): ≤ 5 s for the plain σ-ordered selection. Also timed: the FPS variant
(128-dimensional features, shortlist of fps_pool_factor × n_select) and the trust-band
classification alone. Writes bench/results/select.json with machine info.

Run: python bench/bench_select.py [--n 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from summarize import machine_info  # bench/ is on sys.path when run as a script

from eip_al.atomic import atomic_write_text
from eip_al.select import REASONS, SelectionRules, classify_bands, select_pool

RESULT = Path(__file__).parent / "results" / "select.json"


def synthetic_pool(
    n: int, n_walkers: int, correlated: bool, seed: int = 0
) -> dict[str, np.ndarray]:
    """n frames from n_walkers trajectories sampled every 10 steps, σ log-normal (eV/Å).

    correlated: log σ follows an AR(1) process along each trajectory (neighbouring frames
    have similar σ, as in real MD), so the step-gap rule rejects many top-σ frames.
    """
    rng = np.random.default_rng(seed)
    per = -(-n // n_walkers)
    walker = np.repeat(np.arange(n_walkers), per)[:n]
    step = (np.tile(np.arange(per), n_walkers)[:n] * 10).astype(np.int64)
    noise = rng.standard_normal((n_walkers, per))
    if correlated:
        phi = 0.95
        for t in range(1, per):
            noise[:, t] = phi * noise[:, t - 1] + np.sqrt(1 - phi**2) * noise[:, t]
    sigma = np.exp(np.log(0.15) + 0.8 * noise.ravel()[:n])
    # frame-id-like keys (20 hex chars, as eip_al.io.frame_id gives), 1 % repeated structures
    raw = rng.integers(0, 2**63, size=n, dtype=np.int64)
    dup = rng.random(n) < 0.01
    raw[dup] = raw[rng.integers(0, n, size=int(dup.sum()))]
    key = np.array([f"{v:020x}" for v in raw.tolist()], dtype=object)
    unphysical = rng.random(n) < 0.001
    dataset_keys = set(key[rng.choice(n, size=10_000, replace=False)].tolist())
    return dict(
        sigma=sigma,
        walker=walker,
        step=step,
        key=key,
        unphysical=unphysical,
        dataset_keys=dataset_keys,
    )


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--walkers", type=int, default=1000)
    ap.add_argument("--n-select", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--features", type=int, default=128, help="feature dimension for FPS")
    args = ap.parse_args()

    base = dict(n_select=args.n_select, lo=0.1, hi=1.0, min_step_gap=20, seed=0)
    feats = np.random.default_rng(1).standard_normal((args.n, args.features)).astype(np.float32)
    scenarios: dict[str, dict] = {}
    for correlated in (False, True):
        pool = synthetic_pool(args.n, args.walkers, correlated)

        def run(rules: SelectionRules, features=None, pool=pool):
            return select_pool(
                pool["sigma"],
                pool["walker"],
                pool["step"],
                pool["key"],
                rules,
                unphysical=pool["unphysical"],
                dataset_keys=pool["dataset_keys"],
                features=features,
            )

        t_band, _ = timed(lambda pool=pool: classify_bands(pool["sigma"], 0.1, 1.0), args.repeats)
        t_plain, plain = timed(lambda run=run: run(SelectionRules(**base)), args.repeats)
        t_fps, fps = timed(
            lambda run=run: run(SelectionRules(**base, diversity="fps", fps_pool_factor=10), feats),
            args.repeats,
        )
        scenarios["correlated_sigma" if correlated else "independent_sigma"] = {
            "classify_bands_s": {"min": min(t_band), "all": t_band},
            "select_plain_s": {"min": min(t_plain), "all": t_plain},
            "select_fps_s": {"min": min(t_fps), "all": t_fps},
            "plain_reasons": reason_counts(plain),
            "fps_reasons": reason_counts(fps),
        }

    result = {
        "benchmark": "select",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine_info(), "numpy": np.__version__},
        "params": {**vars(args), "lo": 0.1, "hi": 1.0, "min_step_gap": 20, "fps_pool_factor": 10},
        "target_s": 5.0,
        "scenarios": scenarios,
        "meets_target": all(sc["select_plain_s"]["min"] <= 5.0 for sc in scenarios.values()),
    }
    atomic_write_text(RESULT, json.dumps(result, indent=2) + "\n")
    for name, sc in scenarios.items():
        print(
            f"{name}: plain {sc['select_plain_s']['min']:.2f} s, fps {sc['select_fps_s']['min']:.2f} s, "
            f"reasons {sc['plain_reasons']}"
        )
    print(f"wrote {RESULT}")


def reason_counts(d) -> dict[str, int]:
    return {r: int(np.count_nonzero(d.reason == i)) for i, r in enumerate(REASONS)}


if __name__ == "__main__":
    main()
