"""Selection: trust bands, each rejection rule on a constructed case, FPS, adaptive lo,
convergence, and the generation step end to end on a temporary run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.io import read
from ase.io import write as ase_write

from eip_al.config import ALConfig, CollapseConfig
from eip_al.io import FrameError, attach_labels, frame_id, write_frames
from eip_al.rundir import RunDir, RunDirError
from eip_al.schemas import (
    DatasetManifest,
    ExplorationResult,
    ExplorationSummary,
    SelectionResult,
    TheoryFingerprint,
    TrainingResult,
    TrustFractions,
    ValidationMetrics,
)
from eip_al.select import (
    ACCURATE,
    CANDIDATE,
    FAILED,
    REASONS,
    SelectionModel,
    SelectionRules,
    adaptive_lo,
    classify_bands,
    dataset_frame_ids,
    farthest_point_sampling,
    frame_descriptors,
    resolve_lo,
    select_generation,
    select_pool,
    unphysical_reason,
    validation_sigma,
)
from eip_al.stop import convergence

LO, HI = 0.1, 1.0


def reasons(d) -> list[str]:
    return [REASONS[r] for r in d.reason]


def rules(**kw) -> SelectionRules:
    base = dict(n_select=10, lo=LO, hi=HI, min_step_gap=0)
    base.update(kw)
    return SelectionRules(**base)


def simple(sigma, walker=None, step=None, key=None):
    n = len(sigma)
    return (
        np.asarray(sigma, float),
        np.zeros(n, int) if walker is None else np.asarray(walker),
        np.arange(n) * 10 if step is None else np.asarray(step),
        np.arange(n) if key is None else np.asarray(key),
    )


# ---------------------------------------------------------------- bands
def test_bands_boundaries_and_nan():
    band = classify_bands(np.array([0.0, LO - 1e-9, LO, 0.5, HI - 1e-9, HI, 5.0, np.nan]), LO, HI)
    assert band.tolist() == [
        ACCURATE,
        ACCURATE,
        CANDIDATE,
        CANDIDATE,
        CANDIDATE,
        FAILED,
        FAILED,
        FAILED,
    ]
    with pytest.raises(ValueError, match="lo < hi"):
        classify_bands(np.array([0.5]), 1.0, 0.5)


# ---------------------------------------------------------------- count and order
def test_exact_count_and_descending_sigma():
    rng = np.random.default_rng(1)
    n = 5000
    sigma = rng.uniform(0.0, 1.5, n)
    d = select_pool(
        *simple(sigma, walker=rng.integers(0, 7, n), step=rng.permutation(n)), rules(n_select=137)
    )
    assert d.selected.size == 137
    picked = sigma[d.selected]
    assert np.all(np.diff(picked) <= 0)  # rank order = descending σ
    cand = sigma[(sigma >= LO) & (sigma < HI)]
    assert np.allclose(picked, np.sort(cand)[::-1][:137])  # the top-σ candidates, nothing else
    r = np.array(reasons(d))
    assert (r == "selected").sum() == 137
    assert (r == "over_budget").sum() == cand.size - 137
    assert (r == "accurate").sum() == (sigma < LO).sum()
    assert (r == "failed_band").sum() == (sigma >= HI).sum()
    assert d.rank[d.selected].tolist() == list(range(137))


def test_fewer_candidates_than_n_select_takes_all():
    sigma = [0.05, 0.3, 0.2, 2.0, 0.5]
    d = select_pool(*simple(sigma), rules(n_select=1000))
    assert d.selected.tolist() == [4, 1, 2]
    assert "over_budget" not in reasons(d)


def test_empty_pool():
    d = select_pool(*simple([]), rules())
    assert d.selected.size == 0 and d.reason.size == 0


# ---------------------------------------------------------------- rules
def test_step_gap_rule():
    # one walker sampled every 10 steps; the two largest σ are adjacent frames
    sigma = [0.2, 0.9, 0.8, 0.7, 0.3, 0.25]  # steps 0, 10, 20, 30, 40, 50
    d = select_pool(*simple(sigma), rules(n_select=3, min_step_gap=20))
    assert reasons(d) == ["over_budget", "selected", "step_gap", "selected", "step_gap", "selected"]
    # a gap of exactly 20 is allowed: frames at 10, 30, 50 are picked
    assert d.selected.tolist() == [1, 3, 5]
    # same with time reversed: the gap is checked against later picks too
    rev = select_pool(
        *simple(sigma, step=[50, 40, 30, 20, 10, 0]), rules(n_select=3, min_step_gap=20)
    )
    assert rev.selected.tolist() == [1, 3, 5]
    # another walker is not constrained by this walker's picks
    d2 = select_pool(*simple(sigma, walker=[0, 0, 1, 0, 0, 0]), rules(n_select=3, min_step_gap=20))
    assert d2.selected.tolist() == [1, 2, 3]


def test_step_gap_over_a_long_trajectory():
    # σ decreasing in time along one walker sampled every step: picks every 3rd step
    n = 10_000
    sigma = np.linspace(0.9, 0.2, n)
    d = select_pool(*simple(sigma, step=np.arange(n)), rules(n_select=2000, min_step_gap=3))
    assert d.selected.tolist() == list(range(0, 6000, 3))
    r = np.array(reasons(d))
    assert set(r[:5997][np.arange(5997) % 3 != 0]) == {"step_gap"}
    assert set(r[5998:]) == {"over_budget"}


def test_duplicate_of_dataset_frame_is_rejected():
    sigma = [0.9, 0.8, 0.7]
    d = select_pool(*simple(sigma, key=["a", "b", "c"]), rules(n_select=2), dataset_keys={"a"})
    assert reasons(d) == ["duplicate_dataset", "selected", "selected"]


def test_duplicate_within_pool_is_rejected():
    # same structure seen by two walkers: the second copy is not picked again
    sigma = [0.9, 0.9, 0.5]
    d = select_pool(
        *simple(sigma, walker=[0, 1, 1], step=[0, 0, 50], key=["x", "x", "y"]), rules(n_select=3)
    )
    assert sorted(reasons(d)) == ["duplicate_pool", "selected", "selected"]
    assert d.selected.size == 2 and 2 in d.selected


def test_unphysical_frames_dropped_first():
    sigma = [0.95, 0.5, 0.4, 0.05]
    unph = [True, False, False, True]
    d = select_pool(*simple(sigma), rules(n_select=3), unphysical=unph)
    assert reasons(d) == ["unphysical", "selected", "selected", "unphysical"]


def test_failed_band_never_selected_even_with_spare_budget():
    d = select_pool(*simple([1.0, 3.0, 0.2]), rules(n_select=5))
    assert reasons(d) == ["failed_band", "failed_band", "selected"]


def test_deterministic_for_seed_and_seed_breaks_ties():
    sigma = np.full(200, 0.5)
    args = simple(sigma)
    a = select_pool(*args, rules(n_select=10, seed=3))
    b = select_pool(*args, rules(n_select=10, seed=3))
    c = select_pool(*args, rules(n_select=10, seed=4))
    assert a.selected.tolist() == b.selected.tolist()
    assert np.array_equal(a.reason, b.reason)
    assert a.selected.tolist() != c.selected.tolist()


def test_random_method_ignores_sigma_but_keeps_screen_dedup_and_budget():
    sigma = np.array([0.01, 5.0, 0.5, 0.02, 0.03, np.nan, 0.04, 0.05])
    unph = np.zeros(8, bool)
    unph[5] = True  # non-finite σ: unphysical in the pipeline, whatever the method
    key = np.array([0, 1, 2, 3, 3, 5, 6, 7])  # frame 4 duplicates frame 3
    args = simple(sigma, key=key)
    d = select_pool(*args, rules(n_select=4, method="random"), unphysical=unph, dataset_keys={7},
                    label_noise=np.ones(8, bool))
    r = reasons(d)
    assert d.selected.size == 4 and r[5] == "unphysical" and r[7] == "duplicate_dataset"
    assert "accurate" not in r and "failed_band" not in r and "label_noise" not in r
    assert r.count("duplicate_pool") + r.count("over_budget") == 2
    assert select_pool(*args, rules(n_select=4), unphysical=unph, dataset_keys={7}).selected.tolist() == [2]


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="step has shape"):
        select_pool(np.ones(3) * 0.5, np.zeros(3), np.zeros(2), np.arange(3), rules())


# ---------------------------------------------------------------- FPS
def clusters():
    """Three tight clusters of 10 points; cluster 0 has the highest σ."""
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    feats = np.concatenate([c + 0.01 * rng.standard_normal((10, 2)) for c in centers])
    sigma = np.concatenate([np.full(10, 0.9), np.full(10, 0.5), np.full(10, 0.4)])
    sigma += 1e-3 * rng.random(30)
    return feats, sigma


def test_fps_picks_spread_points():
    feats, sigma = clusters()
    picks = farthest_point_sampling(feats, sigma, 3)
    assert picks[0] == int(np.argmax(sigma))
    assert sorted(p // 10 for p in picks) == [0, 1, 2]


def test_fps_weighting_prefers_uncertain_among_equidistant():
    feats = np.array([[0.0], [1.0], [-1.0]])
    picks = farthest_point_sampling(feats, np.array([1.0, 0.2, 0.6]), 2)
    assert picks.tolist() == [0, 2]


def test_select_pool_fps_versus_plain():
    feats, sigma = clusters()
    args = simple(sigma, step=np.arange(30) * 100)
    plain = select_pool(*args, rules(n_select=3))
    assert {i // 10 for i in plain.selected} == {0}
    calls = []

    def feature_fn(idx):
        calls.append(idx.copy())
        return feats[idx]

    fps = select_pool(
        *args, rules(n_select=3, diversity="fps", fps_pool_factor=10), features=feature_fn
    )
    assert sorted(i // 10 for i in fps.selected) == [0, 1, 2]
    assert reasons(fps).count("fps_not_chosen") == 27
    assert len(calls) == 1 and calls[0].size == 30


def test_fps_shortlist_limited_by_pool_factor():
    feats, sigma = clusters()
    d = select_pool(
        *simple(sigma, step=np.arange(30) * 100),
        rules(n_select=2, diversity="fps", fps_pool_factor=3),
        features=feats,
    )
    r = reasons(d)
    assert (
        r.count("selected") == 2 and r.count("fps_not_chosen") == 4 and r.count("over_budget") == 24
    )


# ---------------------------------------------------------------- adaptive lo
def test_adaptive_lo_from_injected_sigma():
    valid = np.linspace(0.01, 0.2, 101)
    assert adaptive_lo(valid, 0.9, hi=1.0) == pytest.approx(np.quantile(valid, 0.9))
    assert adaptive_lo(valid, 0.9, hi=0.2) == pytest.approx(0.1)  # clamped to hi / 2
    with pytest.raises(ValueError):
        adaptive_lo(np.array([]), 0.5, 1.0)
    with pytest.raises(ValueError):
        adaptive_lo(np.array([0.1, np.nan]), 0.5, 1.0)


def test_resolve_lo_source(tmp_path):
    run = RunDir(tmp_path)
    cfg = ALConfig()
    model = SelectionModel(cfg, run, 0)
    assert resolve_lo(cfg.selection, model) == (cfg.selection.lo, "config")
    cfg.selection.lo_quantile = 0.5
    lo, src = resolve_lo(cfg.selection, model, lambda m: np.array([0.02, 0.04, 0.06]))
    assert (lo, src) == (pytest.approx(0.04), "adaptive")
    assert resolve_lo(cfg.selection, model, lambda m: None) == (cfg.selection.lo, "config")


# ---------------------------------------------------------------- convergence
def fake_result(gen: int, candidate: float, failed: float = 0.0, n: int = 100, collapsed: int = 0):
    frac = TrustFractions(n=n, accurate=1 - candidate - failed, candidate=candidate, failed=failed)
    return SelectionResult(
        generation=gen,
        lo=LO,
        hi=HI,
        lo_source="config",
        n_pool=n,
        n_unphysical=0,
        n_accurate=0,
        n_candidate=0,
        n_failed=0,
        n_selected=0,
        n_requested=10,
        per_walker={},
        overall=frac,
        selected_extxyz="x",
        decisions_csv="y",
        n_collapsed_walkers=collapsed,
    )


def test_convergence_rule():
    lim = 0.05
    ok, why = convergence([fake_result(0, 0.04), fake_result(1, 0.01)], lim, 2)
    assert ok and "0.040" in why and "0.010" in why
    assert convergence([fake_result(0, 0.06), fake_result(1, 0.01)], lim, 2) == (False, None)
    assert convergence([fake_result(1, 0.01)], lim, 2) == (False, None)  # too few generations
    assert convergence([None, fake_result(1, 0.01)], lim, 2) == (False, None)
    assert convergence([fake_result(0, 0.30), fake_result(1, 0.01)], lim, 1)[0]
    assert not convergence([fake_result(1, 0.01, failed=0.5)], lim, 1)[0]  # exploration blew up
    assert not convergence([fake_result(1, 0.01, collapsed=1)], lim, 1)[0]
    assert not convergence([fake_result(1, 0.0, n=0)], lim, 1)[0]  # nothing explored


# ---------------------------------------------------------------- unphysical checks
def test_unphysical_reason():
    col = CollapseConfig(min_distance=0.6, max_oh_bond=1.6)
    water = Atoms(
        "OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=[8, 8, 8], pbc=True
    )
    assert unphysical_reason(water, col) is None
    squeezed = water.copy()
    squeezed.positions[1] = [0.3, 0, 0]
    assert unphysical_reason(squeezed, col).startswith("unphysical: O-H 0.300 Å < 0.600 Å")
    lost_h = water.copy()
    lost_h.positions[1] = [4.0, 0, 0]
    assert "max_oh_bond" in unphysical_reason(lost_h, col)
    # across the periodic boundary: 0.2 Å apart through the cell face
    ar = Atoms("Ar2", positions=[[0.1, 1, 1], [7.9, 1, 1]], cell=[8, 8, 8], pbc=True)
    assert unphysical_reason(ar, col).startswith("unphysical: Ar-Ar 0.200 Å <")
    ar.pbc = False
    ar.cell = [0, 0, 0]
    assert unphysical_reason(ar, col) is None


# ---------------------------------------------------------------- generation step
BOX = 8.0


def make_frame(seed: int, walker: str, kind: str, step: int, sigma: float, **info) -> Atoms:
    rng = np.random.default_rng(seed)
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)], float)
    atoms = Atoms("Ar8", positions=grid * 4.0 + 0.3 * rng.random((8, 3)), cell=[BOX] * 3, pbc=True)
    per_atom = np.full(8, sigma)
    atoms.arrays["uncertainty"] = per_atom
    atoms.arrays["uncertainty_components"] = np.repeat(per_atom[:, None] / np.sqrt(3), 3, axis=1)
    atoms.arrays["aleatoric_components"] = np.full((8, 3), 0.01)
    atoms.info.update(
        walker=walker,
        kind=kind,
        source=kind,
        step=step,
        time_fs=0.5 * step,
        config_uncertainty=sigma,
        sigma_max=sigma,
        generation=0,
    )
    atoms.info.update(info)
    atoms.info.setdefault("frame_id", frame_id(atoms))
    return atoms


def write_run(
    tmp_path: Path,
    walkers: dict[str, list[Atoms]],
    dataset: list[Atoms],
    collapsed: tuple[str, ...] = (),
    gen: int = 0,
) -> RunDir:
    run = RunDir(tmp_path / "run")
    results = []
    for name, frames in walkers.items():
        rel = f"gen-{gen:03d}/explore/{name}.extxyz"
        if frames:
            write_frames(run.abs(rel), frames)
        kind = "udd" if name.startswith("udd") else "md"
        results.append(
            ExplorationResult(
                generation=gen,
                walker=name,
                kind=kind,
                temperature_K=300.0,
                steps_requested=100,
                steps_run=100,
                simulated_time_fs=50.0,
                collapsed=name in collapsed,
                n_candidates=len(frames),
                log_csv=f"gen-{gen:03d}/explore/{name}.csv",
                frames_extxyz=rel,
                wall_time_s=1.0,
            )
        )
    ExplorationSummary(generation=gen, walkers=results).write(run.artifact_path(gen, "explore"))
    ds_path = run.seed_dir / "dataset.extxyz"
    write_frames(ds_path, dataset)
    DatasetManifest(
        generation=-1,
        dataset_extxyz=run.rel(ds_path),
        n_frames=len(dataset),
        counts_by_source={"seed": len(dataset)},
        counts_by_generation={"-1": len(dataset)},
        split_counts={"train": len(dataset)},
        theory=TheoryFingerprint(code="mock-qspcfw", method="q-SPC/Fw"),
        sha256="0" * 64,
    ).write(run.seed_dir / "artifact.json")
    return run


def labelled(atoms: Atoms) -> Atoms:
    a = atoms.copy()
    a.info = {"frame_id": atoms.info["frame_id"], "source": "seed", "split": "train"}
    return attach_labels(a, -1.0, np.zeros((len(a), 3)))


def e2e_walkers():
    md = [
        make_frame(s, "md-300K-0", "md", 10 * s, sig)
        for s, sig in enumerate([0.02, 0.5, 0.45, 0.6, 0.3, 0.25, 1.5])
    ]
    udd = [
        make_frame(100 + s, "udd-300K-0", "udd", 10 * s, sig)
        for s, sig in enumerate([0.7, 0.65, 0.4, 0.35])
    ]
    udd[0].info["unphysical"] = True
    squeezed = make_frame(999, "udd-300K-0", "udd", 40, 0.9)
    squeezed.positions[1] = squeezed.positions[0] + [0.3, 0, 0]
    squeezed.info["frame_id"] = frame_id(squeezed)
    udd.append(squeezed)
    dup_of_md = md[4].copy()  # the same structure reached by the udd walker later
    # (σ set a little lower so the σ order, not a seeded tie-break, decides which copy is first)
    dup_of_md.info.update(
        walker="udd-300K-0", kind="udd", source="udd", step=90, config_uncertainty=0.28
    )
    udd.append(dup_of_md)
    return md, udd


def test_select_generation_end_to_end(tmp_path):
    md, udd = e2e_walkers()
    in_dataset = md[3]  # σ 0.6, already labelled
    run = write_run(tmp_path, {"md-300K-0": md, "udd-300K-0": udd}, [labelled(in_dataset)])
    cfg = ALConfig()
    cfg.selection.n_select = 5  # only 4 pass the rules: fewer than requested
    cfg.selection.min_step_gap = 20
    cfg.selection.lo, cfg.selection.hi = 0.1, 1.0

    res = select_generation(cfg, run, 0)
    assert res.n_pool == 13 and res.n_unphysical == 2
    assert (res.n_accurate, res.n_candidate, res.n_failed) == (1, 9, 1)
    assert res.n_selected == 4 and res.n_requested == 5 and res.lo_source == "config"
    assert res.per_walker["md-300K-0"].n == 7
    assert res.per_walker["udd-300K-0"].unphysical == pytest.approx(2 / 6)
    o = res.overall
    assert o.accurate + o.candidate + o.failed + o.unphysical == pytest.approx(1.0)

    table = pd.read_csv(run.abs(res.decisions_csv))
    assert len(table) == 13
    why = {(w, s): r for w, s, r in zip(table.walker, table.step, table.reason, strict=True)}
    assert why[("md-300K-0", 0)] == "accurate"
    assert why[("md-300K-0", 60)] == "failed_band"
    assert why[("md-300K-0", 30)] == "duplicate_dataset"
    assert why[("udd-300K-0", 0)] == "unphysical"
    assert why[("udd-300K-0", 40)] == "unphysical"
    assert why[("udd-300K-0", 10)] == "selected"  # 0.65, highest physical candidate
    assert why[("md-300K-0", 10)] == "selected"  # 0.5
    assert why[("md-300K-0", 20)] == "step_gap"  # 0.45, 10 steps from the pick at 10
    assert why[("udd-300K-0", 20)] == "step_gap"  # 0.40, 10 steps from udd pick at 10
    assert why[("udd-300K-0", 30)] == "selected"  # 0.35
    assert why[("md-300K-0", 40)] == "selected"  # 0.30
    assert why[("udd-300K-0", 90)] == "duplicate_pool"  # same structure as md step 40
    assert why[("md-300K-0", 50)] == "step_gap"  # 0.25, 10 steps from the pick at 40
    assert set(table.decision[table.reason == "selected"]) == {"selected"}

    sel = read(run.abs(res.selected_extxyz), index=":")
    assert [a.info["selection_rank"] for a in sel] == [0, 1, 2, 3]
    assert [a.info["config_uncertainty"] for a in sel] == [0.65, 0.5, 0.35, 0.3]
    first = sel[0]
    assert (
        first.info["walker"] == "udd-300K-0"
        and first.info["kind"] == "udd"
        and first.info["step"] == 10
    )
    assert first.info["time_fs"] == 5.0 and first.info["frame_id"] == udd[1].info["frame_id"]
    assert first.arrays["uncertainty"].shape == (8,)
    assert first.arrays["uncertainty_components"].shape == (8, 3)
    assert not res.converged  # candidate fraction 9/13

    again = select_generation(cfg, run, 0)  # deterministic rerun
    assert again.model_dump(exclude={"created_at"}) == res.model_dump(exclude={"created_at"})


def test_select_generation_no_frames(tmp_path):
    run = write_run(
        tmp_path,
        {"md-300K-0": [], "udd-300K-0": []},
        [labelled(make_frame(1, "s", "md", 0, 0.1))],
        collapsed=("md-300K-0", "udd-300K-0"),
    )
    res = select_generation(ALConfig(), run, 0)
    assert res.n_pool == 0 and res.n_selected == 0 and res.n_collapsed_walkers == 2
    assert run.abs(res.selected_extxyz).stat().st_size == 0
    assert len(pd.read_csv(run.abs(res.decisions_csv))) == 0
    assert res.overall.n == 0 and not res.converged


def test_select_generation_adaptive_lo_and_fps(tmp_path):
    md, udd = e2e_walkers()
    run = write_run(
        tmp_path, {"md-300K-0": md, "udd-300K-0": udd}, [labelled(make_frame(7, "s", "md", 0, 0.1))]
    )
    cfg = ALConfig()
    cfg.selection.n_select = 2
    cfg.selection.min_step_gap = 0
    cfg.selection.lo_quantile = 0.5
    cfg.selection.diversity = "fps"
    seen: list[int] = []

    def descriptors(m, frames):
        seen.append(len(frames))
        # feature = walker index: FPS must take one frame from each walker
        return np.array([[0.0 if f.info["walker"].startswith("md") else 5.0] for f in frames])

    res = select_generation(
        cfg,
        run,
        0,
        valid_sigma_fn=lambda m: np.array([0.3, 0.4, 0.5]),
        descriptor_fn=descriptors,
    )
    assert res.lo_source == "adaptive" and res.lo == pytest.approx(0.4)
    sel = read(run.abs(res.selected_extxyz), index=":")
    assert sorted(a.info["walker"] for a in sel) == ["md-300K-0", "udd-300K-0"]
    assert seen and seen[0] > 2
    assert res.n_accurate == 5  # σ below the adaptive lo 0.4: 0.02, 0.3, 0.25, 0.35 and dup 0.3


def test_convergence_through_generations(tmp_path):
    quiet = [make_frame(s, "md-300K-0", "md", 10 * s, 0.02) for s in range(19)]
    quiet.append(make_frame(50, "md-300K-0", "md", 500, 0.5))  # 1 candidate in 20 = 0.05
    run = write_run(
        tmp_path, {"md-300K-0": quiet}, [labelled(make_frame(99, "s", "md", 0, 0.1))], gen=0
    )
    cfg = ALConfig()
    cfg.selection.converge_generations = 2
    cfg.selection.converge_candidate_fraction = 0.06
    res0 = select_generation(cfg, run, 0)
    assert res0.overall.candidate == pytest.approx(0.05) and not res0.converged  # only 1 generation
    res0.write(run.artifact_path(0, "select"))
    # generation 1 explores the same way; trains on the seed dataset here for simplicity
    summary = ExplorationSummary.load(run.artifact_path(0, "explore"))
    summary.generation = 1
    summary.write(run.artifact_path(1, "explore"))
    (run.root / "gen-000" / "merge").mkdir(parents=True)
    DatasetManifest.load(run.seed_dir / "artifact.json").write(run.artifact_path(0, "merge"))
    res1 = select_generation(cfg, run, 1)
    assert res1.converged and "gen 0" in res1.converged_reason and "gen 1" in res1.converged_reason
    cfg.selection.converge_candidate_fraction = 0.05  # 0.05 is not below 0.05
    assert not select_generation(cfg, run, 1).converged


def test_bad_frame_names_file_and_frame(tmp_path):
    md, _ = e2e_walkers()
    del md[2].info["step"]
    run = write_run(tmp_path, {"md-300K-0": md}, [labelled(make_frame(7, "s", "md", 0, 0.1))])
    with pytest.raises(FrameError, match=r"md-300K-0\.extxyz: frame 2: missing info 'step'"):
        select_generation(ALConfig(), run, 0)


def test_missing_exploration_is_a_clear_error(tmp_path):
    with pytest.raises(RunDirError, match="no valid exploration summary"):
        select_generation(ALConfig(), RunDir(tmp_path), 0)


def test_number_like_strings_survive_extxyz(tmp_path):
    # a file written by plain ASE (no string protection): the all-digit frame id and walker
    # name read back as numbers; the id is recomputed from the structure, the walker comes
    # from the walker's artifact, and selected.extxyz gives both back as strings
    frames = [make_frame(3, "000123", "md", 0, 0.5, frame_id="98765432109876543210")]
    run = write_run(tmp_path, {"000123": frames}, [labelled(make_frame(7, "s", "md", 0, 0.1))])
    ase_write(run.abs("gen-000/explore/000123.extxyz"), frames, format="extxyz")
    assert not isinstance(read(run.abs("gen-000/explore/000123.extxyz")).info["frame_id"], str)
    res = select_generation(ALConfig(), run, 0)
    (sel,) = read(run.abs(res.selected_extxyz), index=":")
    assert sel.info["walker"] == "000123"
    assert sel.info["frame_id"] == frame_id(read(run.abs("gen-000/explore/000123.extxyz")))
    assert list(res.per_walker) == ["000123"]


def test_validation_sigma_and_descriptors_from_a_real_checkpoint(tmp_path, monkeypatch):
    """Adaptive lo, FPS descriptors and the calibration share one read of the checkpoint."""
    import eip_al.model.checkpoint as checkpoint
    from eip_al.calculator import EIPCalculator
    from eip_al.model import save_checkpoint
    from tests.model_fixtures import tiny_model, water_box

    reads = []
    read_payload = checkpoint.read_payload
    monkeypatch.setattr(checkpoint, "read_payload", lambda path: reads.append(path) or read_payload(path))

    run = RunDir(tmp_path)
    ckpt = save_checkpoint(run.step_dir(0, "train") / "model.pt", tiny_model(1))
    frames = [water_box(4, box=5.0, seed=s) for s in range(5)]
    for i, a in enumerate(frames):
        a.info["split"] = "valid" if i in (1, 3) else "train"
        attach_labels(a, 0.0, np.zeros((len(a), 3)))
    write_frames(run.step_dir(0, "train") / "dataset.extxyz", frames)
    metrics = ValidationMetrics(
        n_frames=2, energy_mae_per_atom=0, force_mae=0, force_rmse=0, sigma_mean=0, aleatoric_mean=0
    )
    TrainingResult(
        generation=0,
        checkpoint=run.rel(ckpt),
        metrics_csv="gen-000/train/metrics.csv",
        dataset="gen-000/train/dataset.extxyz",
        n_train=3,
        n_valid=2,
        epochs_run=1,
        best_epoch=0,
        stopped_reason="max_epochs",
        device="cpu",
        wall_time_s=0.0,
        valid=metrics,
        element_energies={},
    ).write(run.artifact_path(0, "train"))
    cfg = ALConfig()
    cfg.explore.device = "cpu"

    model = SelectionModel(cfg, run, 0)
    sigma = validation_sigma(model)
    assert len(reads) == 1
    calc = EIPCalculator(ckpt, "cpu")
    expected = [float(np.mean(calc.get_property("uncertainty", frames[i].copy()))) for i in (1, 3)]
    assert np.allclose(sigma, expected, rtol=1e-6)

    feats = frame_descriptors(model, frames[:3])
    assert feats.shape[0] == 3 and feats.ndim == 2 and np.all(np.isfinite(feats))
    assert not np.allclose(feats[0], feats[1])
    assert model.calibration() is None  # a model saved without one
    assert len(reads) == 2  # the model's one read for all three, and the test's own calculator


def test_dataset_frame_ids_fast_path_and_fallback(tmp_path):
    frames = [labelled(make_frame(s, "w", "md", 0, 0.1)) for s in range(3)]
    protected = tmp_path / "ok.extxyz"
    write_frames(protected, frames)
    assert dataset_frame_ids(protected) == {f.info["frame_id"] for f in frames}
    # an id that plain ASE reads back as a number forces a full read and a re-hash
    frames[1].info["frame_id"] = "12345678901234567890"
    raw = tmp_path / "raw.extxyz"
    ase_write(raw, frames, format="extxyz")
    got = dataset_frame_ids(raw)
    assert frame_id(read(raw, index=1)) in got and frames[0].info["frame_id"] in got
    bad = tmp_path / "bad.extxyz"
    bad.write_text(protected.read_text().replace("8\n", "eight\n", 1))
    with pytest.raises(FrameError, match="bad.extxyz: frame 0: expected an atom count"):
        dataset_frame_ids(bad)
