"""Per-generation reports and the run summary, built from synthetic run directories.

Numbers are checked by recomputing them independently from the synthetic inputs (logs,
decisions, frames, labels and the stand-in predictor), not against stored values.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase.io import read
from PIL import Image
from scipy.stats import spearmanr
from synthetic_run import build_synthetic_run, synthetic_predictor, water_box

from eip_al.report import (
    config_entropy,
    prefect_summary,
    report_generation,
    report_run,
    run_summary,
    water_order_parameters,
)
from eip_al.report.summary import PREFECT_FIGURES
from eip_al.rundir import RunDir, RunDirError
from eip_al.schemas import GenerationReport, LabelingResult, SelectionResult

WALKERS = ("md-300K-0", "md-300K-1", "udd-300K-0", "udd-300K-1")


# ============================================================================ diversity
def test_entropy_uniform_grid_is_one_single_cell_is_zero():
    ne = 8
    centers = (np.arange(ne) + 0.5) / ne
    x, y = np.meshgrid(centers, centers)
    assert config_entropy(np.repeat(x.ravel(), 3), np.repeat(y.ravel(), 3), ne, (0, 1), (0, 1)) == pytest.approx(1.0)
    assert config_entropy(np.full(50, 0.31), np.full(50, 0.62), ne, (0, 1), (0, 1)) == pytest.approx(0.0)
    # two equally filled cells: log 2 / (2 log Ne); samples outside the grid do not count
    xs = np.array([0.1, 0.1, 0.9, 0.9, 5.0, -1.0])
    ys = np.array([0.1, 0.1, 0.9, 0.9, 0.5, 0.5])
    assert config_entropy(xs, ys, ne, (0, 1), (0, 1)) == pytest.approx(np.log(2) / (2 * np.log(ne)))
    assert config_entropy(np.array([3.0]), np.array([3.0]), ne, (0, 1), (0, 1)) is None


def test_entropy_rejects_bad_arguments():
    with pytest.raises(ValueError, match="same length"):
        config_entropy(np.zeros(3), np.zeros(2), 4, (0, 1), (0, 1))
    with pytest.raises(ValueError, match="y_range"):
        config_entropy(np.zeros(3), np.zeros(3), 4, (0, 1), (1, 1))
    with pytest.raises(ValueError, match="bins"):
        config_entropy(np.zeros(3), np.zeros(3), 1, (0, 1), (0, 1))


def test_water_order_parameters_recover_constructed_geometry_across_the_box():
    rng = np.random.default_rng(3)
    angles = rng.uniform(95, 120, 8)
    bonds = rng.uniform(0.9, 1.1, (8, 2))
    atoms = water_box(angles, bonds, rng)
    assert (atoms.get_scaled_positions(wrap=False) >= 0).all()  # wrapped: molecules straddle faces
    order = rng.permutation(len(atoms))  # atom order must not matter
    ops = water_order_parameters([atoms[order]])
    assert ops.n_molecules_skipped == 0
    expected = sorted(zip(np.repeat(angles, 2), bonds.ravel(), strict=True))
    got = sorted(zip(ops.angle_deg, ops.bond_A, strict=True))
    np.testing.assert_allclose(np.array(got), np.array(expected), atol=1e-9)


def test_water_order_parameters_skip_dissociated_and_reject_non_water():
    rng = np.random.default_rng(4)
    atoms = water_box(np.full(8, 104.5), np.full((8, 2), 0.97), rng)
    h = 1  # move the first molecule's H onto the second O: O0 has one H, O1 three
    atoms.positions[h] = atoms.positions[3] + [0.0, 0.0, 0.95]
    ops = water_order_parameters([atoms])
    assert ops.n_molecules_skipped == 2 and ops.angle_deg.size == 2 * 6
    with pytest.raises(ValueError, match="not a water frame"):
        water_order_parameters([atoms[:-1]])


# ============================================================================ full run
def _entropy_reference(x, y, ne, xr, yr):
    keep = (x >= xr[0]) & (x <= xr[1]) & (y >= yr[0]) & (y <= yr[1])
    ix = np.minimum(((x[keep] - xr[0]) / (xr[1] - xr[0]) * ne).astype(int), ne - 1)
    iy = np.minimum(((y[keep] - yr[0]) / (yr[1] - yr[0]) * ne).astype(int), ne - 1)
    _, counts = np.unique(ix * ne + iy, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / (2 * np.log(ne)))


def _auc_reference(score, bad):
    pos, neg = score[bad], score[~bad]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Gen 0: some walkers collapse; gen 1: every walker collapses and nothing is selected."""
    root = tmp_path_factory.mktemp("run")
    s = build_synthetic_run(
        root,
        collapse={0: {"md-300K-0": 30, "udd-300K-0": 12},
                  1: {"md-300K-0": 20, "md-300K-1": 25, "udd-300K-0": 0, "udd-300K-1": 8}},
        n_select={0: 6, 1: 0},
    )
    reports = report_run(s.run, predict=synthetic_predictor)
    return s, reports


def test_every_output_file_exists_and_figures_are_real_pngs(built):
    s, reports = built
    run = s.run
    assert [r.generation for r in reports] == [0, 1]
    for rep in reports:
        assert GenerationReport.load(run.artifact_path(rep.generation, "report")) == rep
        names = {Path(f).name for f in rep.figures}
        assert {"energy_sigma.png", "sigma_hist.png", "trust_fractions.png", "training_curves.png",
                "order_parameters.png", "aleatoric_epistemic.png"} <= names
        for f in rep.figures:
            path = run.abs(f)
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("L"), dtype=float)
            assert min(pixels.shape) > 100 and pixels.std() > 5  # drawn, not blank
        for t in rep.tables:
            assert run.abs(t).stat().st_size > 0
    assert {"parity.png", "error_vs_sigma.png"} <= {Path(f).name for f in reports[0].figures}
    for name in ("summary.md", "summary.html", "summary.csv", "summary/trends.png"):
        assert (run.root / name).exists()


def test_html_is_self_contained_and_markdown_links_resolve(built):
    s, reports = built
    for rep in reports:
        html = s.run.abs(rep.report_html).read_text()
        srcs = re.findall(r'src="([^"]+)"', html)
        assert len(srcs) == len(rep.figures) and all(x.startswith("data:image/png;base64,") for x in srcs)
        embedded = {base64.b64decode(x.split(",", 1)[1]) for x in srcs}
        assert embedded == {s.run.abs(f).read_bytes() for f in rep.figures}
        md_path = s.run.abs(rep.report_md)
        links = re.findall(r"\]\(([^)]+)\)", md_path.read_text())
        assert links and all((md_path.parent / link).exists() for link in links)
    summary_md = s.run.root / "summary.md"
    assert all((s.run.root / link).exists() for link in re.findall(r"\]\(([^)]+)\)", summary_md.read_text()))


def test_walker_table_and_entropy_equal_recomputed_values(built):
    s, reports = built
    run, rep = s.run, reports[0]
    out = run.step_dir(0, "report")
    walkers = pd.read_csv(out / "walkers.csv").set_index("walker")
    entropy = pd.read_csv(out / "entropy.csv").set_index("walker")
    for w in WALKERS:
        info = json.loads((run.step_dir(0, "explore") / f"{w}.json").read_text())
        log = pd.read_csv(run.abs(info["log_csv"]))
        row = walkers.loc[w]
        assert row["sigma_config_mean"] == pytest.approx(log["sigma"].mean(), rel=1e-12)
        assert row["sigma_config_max"] == pytest.approx(log["sigma"].max(), rel=1e-12)
        assert row["energy_std"] == pytest.approx(np.std(log["energy"]), rel=1e-12)
        stable = info["collapse_time_fs"] if info["collapsed"] else info["simulated_time_fs"]
        assert row["stable_time_fs"] == pytest.approx(stable)
        assert rep.numbers[f"stable_time_fs.{w}"] == pytest.approx(stable)
        # entropy from the walker's frames, order parameters by the known O,H,H topology
        frames = read(run.abs(info["frames_extxyz"]), ":")
        ang, bond = [], []
        for a in frames:
            for o in range(0, len(a), 3):
                theta = a.get_angle(o + 1, o, o + 2, mic=True)
                for h in (o + 1, o + 2):
                    ang.append(theta)
                    bond.append(a.get_distance(o, h, mic=True))
        expected = _entropy_reference(np.array(ang), np.array(bond), 40, (80.0, 130.0), (0.85, 1.25))
        assert entropy.loc[w, "entropy"] == pytest.approx(expected, abs=1e-9)
        assert entropy.loc[w, "n_samples"] == len(ang)
    md = [rep.numbers[f"entropy.{w}"] for w in WALKERS[:2]]
    assert rep.numbers["md_entropy_mean"] == pytest.approx(np.mean(md))


def test_selection_tables_equal_recomputed_values(built):
    s, reports = built
    out = s.run.step_dir(0, "report")
    dec = pd.read_csv(s.run.step_dir(0, "select") / "decisions.csv")
    fr = pd.read_csv(out / "trust_fractions.csv").set_index("walker")
    for w, sub in [*dec.groupby("walker"), ("overall", dec)]:
        for band in ("accurate", "candidate", "failed"):
            assert fr.loc[w, band] == pytest.approx((sub["band"] == band).mean())
    stats = pd.read_csv(out / "sigma_stats.csv").set_index("quantity")["value"]
    picked = dec.loc[dec["decision"] == "selected", "sigma"]
    assert stats["pool_sigma_mean"] == pytest.approx(dec["sigma"].mean())
    assert stats["pool_sigma_p90"] == pytest.approx(np.quantile(dec["sigma"], 0.9))
    assert stats["selected_sigma_mean"] == pytest.approx(picked.mean())
    hist = pd.read_csv(out / "sigma_hist.csv")
    assert hist["n_pool"].sum() == len(dec) and hist["n_selected"].sum() == len(picked) == 6
    assert reports[0].numbers["frac_candidate"] == pytest.approx((dec["band"] == "candidate").mean())


def test_labeling_and_audit_equal_recomputed_values(built):
    s, reports = built
    run, rep = s.run, reports[0]
    out = run.step_dir(0, "report")
    outcomes = json.loads(run.artifact_path(0, "label").read_text())["outcomes"]
    labeling = pd.read_csv(out / "labeling.csv").set_index("outcome")["count"]
    assert labeling["ok"] == sum(o["status"] == "ok" for o in outcomes)
    failed = [o["failure_class"] for o in outcomes if o["status"] == "failed"]
    assert failed and all(labeling[f"failed: {c}"] == failed.count(c) for c in set(failed))

    frames = read(run.step_dir(0, "label") / "labeled.extxyz", ":")
    preds = synthetic_predictor(Path("unused"), frames)
    err = np.concatenate([np.linalg.norm(p["forces"] - a.get_forces(), axis=1) for a, p in zip(frames, preds, strict=True)])
    sig = np.concatenate([p["uncertainty"] for p in preds])
    audit = pd.read_csv(out / "audit.csv").set_index("set")
    row = audit.loc["new_labels"]
    assert row["n_frames"] == len(frames)
    assert row["spearman_atom"] == pytest.approx(spearmanr(sig, err).statistic)
    assert row["roc_auc_atom"] == pytest.approx(_auc_reference(sig, err > np.quantile(err, 0.8)))
    diff = np.concatenate([(p["forces"] - a.get_forces()).ravel() for a, p in zip(frames, preds, strict=True)])
    assert row["force_mae"] == pytest.approx(np.abs(diff).mean())
    e_err = [(p["energy"] - a.get_potential_energy()) / len(a) for a, p in zip(frames, preds, strict=True)]
    assert row["energy_mae_per_atom"] == pytest.approx(np.mean(np.abs(e_err)))
    assert rep.numbers["audit_spearman_atom"] == pytest.approx(row["spearman_atom"])
    # the fixed test split is the seed's split=test frames, the same every generation
    seed = [a for a in read(run.seed_dir / "dataset.extxyz", ":") if a.info["split"] == "test"]
    assert audit.loc["fixed_test", "n_frames"] == len(seed)
    assert reports[1].numbers["test_force_mae"] == pytest.approx(rep.numbers["test_force_mae"])
    # force sizes of the new labels vs the dataset generation 0 trained on
    data = read(run.abs(run.dataset_for(0).dataset_extxyz), ":")
    p99 = np.percentile(np.concatenate([np.linalg.norm(a.get_forces(), axis=1) for a in data]), 99)
    assert rep.numbers["dataset_force_p99"] == pytest.approx(p99)
    assert rep.numbers["label_force_max"] == pytest.approx(max(np.linalg.norm(a.get_forces(), axis=1).max()
                                                                for a in frames))
    assert rep.numbers["n_label_high_force"] == 0
    # calibration curves: new labels, the fixed test split, and the training's validation split
    curves = pd.read_csv(out / "calibration_curves.csv")
    valid = [a for a in data if a.info["split"] == "valid"]
    raw = curves[curves["scale"] == "raw σ"].groupby("set")["n_atoms"].sum()
    assert raw["validation"] == sum(len(a) for a in valid) and raw["new_labels"] == sum(len(a) for a in frames)
    assert "validation" not in set(audit.index)  # its metrics are the training section's valid_* numbers


def test_labels_far_above_the_dataset_forces_are_a_finding(tmp_path):
    from eip_al.io import read_frames, write_frames
    from eip_al.report import report_generation

    s = build_synthetic_run(tmp_path / "run", generations=1)
    path = s.run.step_dir(0, "label") / "labeled.extxyz"
    frames = read_frames(path)
    frames[0].calc.results["forces"] = 40.0 * frames[0].get_forces()  # a close contact
    write_frames(path, frames)
    rep = report_generation(s.cfg, s.run, 0, predict=synthetic_predictor)
    assert rep.numbers["n_label_high_force"] == 1
    findings = s.run.abs(rep.report_md).read_text().split("## Findings")[1].split("##")[0]
    assert "1 new label(s) with a per-atom force above 3×" in findings, findings


def test_all_collapsed_and_zero_selected_generation_reports_clearly(built):
    s, reports = built
    rep = reports[1]
    text = s.run.abs(rep.report_md).read_text()
    assert "all 4 walkers collapsed" in text
    assert "no frames were selected" in text
    assert "no frame was labeled successfully" in text
    assert rep.numbers["n_selected"] == 0 and rep.numbers["n_collapsed"] == 4
    assert rep.numbers["stable_time_fs.udd-300K-0"] == 0.0
    assert rep.numbers["entropy.udd-300K-0"] is None  # collapsed at step 0: no frames
    hist = pd.read_csv(s.run.step_dir(1, "report") / "sigma_hist.csv")
    assert hist["n_selected"].sum() == 0 and hist["n_pool"].sum() > 0
    assert "audit_force_mae" not in rep.numbers and "test_force_mae" in rep.numbers


def test_summary_rows_are_the_generation_numbers(built):
    s, reports = built
    df = pd.read_csv(s.run.root / "summary.csv")
    assert df["generation"].tolist() == [0, 1]
    for rep in reports:
        row = df.loc[df["generation"] == rep.generation].iloc[0]
        for key in ("dataset_in_frames", "dataset_out_frames", "valid_force_mae", "frac_candidate",
                    "md_stable_time_fs_mean", "wall_s.train", "stable_time_fs.md-300K-1"):
            assert row[key] == pytest.approx(rep.numbers[key])
    assert df.loc[1, "dataset_in_frames"] == df.loc[0, "dataset_out_frames"]
    walkers = pd.read_csv(s.run.root / "summary" / "walkers.csv")
    assert len(walkers) == 2 * len(WALKERS)
    fails = pd.read_csv(s.run.root / "summary" / "label_failures.csv")
    assert fails["count"].sum() == sum(r.numbers.get("n_label_failed", 0) for r in reports)


def test_prefect_summary_gives_rows_and_markdown(built):
    import base64
    import io
    import re

    from matplotlib import image

    s, reports = built
    rows, md = prefect_summary(reports[0], s.run.root)
    assert {r["metric"]: r["value"] for r in rows} == reports[0].numbers
    assert "generation 0" in md and "audit Spearman" in md
    html = (s.run.root / reports[0].report_html).resolve()
    assert f"]({html.as_uri()})" in md  # absolute, clickable
    # the key figures embedded as PNG thumbnails that decode to half the report's size
    uris = re.findall(r"!\[([^]]+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert [c for c, _ in uris] == [c for _, c in PREFECT_FIGURES]
    for (name, _), (_, b64) in zip(PREFECT_FIGURES, uris, strict=True):
        thumb = image.imread(io.BytesIO(base64.b64decode(b64)))
        full = image.imread(s.run.root / f"gen-000/report/{name}")
        assert thumb.shape[0] == pytest.approx(full.shape[0] / 2, abs=2)


# ============================================================================ missing / bad input
def test_report_builds_from_partial_and_damaged_steps(tmp_path):
    s = build_synthetic_run(tmp_path / "run", generations=1, skip_steps={0: ["label"]})
    run = s.run
    (run.artifact_path(0, "explore")).unlink()  # summary gone, per-walker JSONs remain
    log = run.step_dir(0, "explore") / "md-300K-1.csv"
    pd.read_csv(log).drop(columns=["sigma"]).to_csv(log, index=False)
    run.artifact_path(0, "select").write_text('{"schema_version": 1, "generation": "x"}')

    def broken(checkpoint, frames):
        raise RuntimeError("checkpoint is corrupt")

    full = report_generation(s.cfg, run, 0, predict=synthetic_predictor)
    assert "fixed_test" in pd.read_csv(run.abs(full.report_md).parent / "audit.csv")["set"].tolist()
    rep = report_generation(s.cfg, run, 0, predict=broken)
    text = run.abs(rep.report_md).read_text()
    files = {p.name for p in run.step_dir(0, "report").iterdir()}
    assert "audit.csv" not in files  # the earlier build's audit is gone, not left stale
    assert {Path(f).name for f in rep.figures + rep.tables} | {"report.md", "report.html"} == files
    assert "step `label` has not run" in text
    assert "showing the 4 walker result(s) written so far" in text
    assert "lacks column(s) ['sigma']" in text
    assert "step `select` artifact is invalid" in text
    assert "checkpoint is corrupt" in text
    assert set(rep.numbers["missing_steps"].split(", ")) == {"explore", "select", "label", "merge"}
    status = pd.read_csv(run.step_dir(0, "report") / "steps.csv").set_index("step")["status"]
    assert status.to_dict() == {"train": "done", "explore": "missing", "select": "invalid",
                                "label": "missing", "merge": "missing", "audit": "not run",
                                "report": "this report"}
    assert rep.numbers["n_walkers"] == 4 and "frac_candidate" not in rep.numbers
    assert "energy_sigma.png" in {Path(f).name for f in rep.figures}


def test_generation_without_any_step_and_summary_without_report(tmp_path):
    s = build_synthetic_run(tmp_path / "run", generations=1, skip_steps={0: ["train"]})
    rep = report_generation(s.cfg, s.run, 0, predict=synthetic_predictor)
    assert rep.figures == [] and "nothing to report yet" in s.run.abs(rep.report_md).read_text()
    df = run_summary(s.run)  # no report artifact written: the summary says so
    assert df["report_html"].isna().all()
    assert "have no report yet" in (s.run.root / "summary.md").read_text()


def test_report_run_rejects_unknown_generation_and_non_run_dir(tmp_path):
    s = build_synthetic_run(tmp_path / "run", generations=1)
    with pytest.raises(RunDirError, match="no generation 5"):
        report_run(s.run, [5], predict=synthetic_predictor)
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        report_run(RunDir(tmp_path / "nothing"))


def test_predict_checkpoint_runs_a_real_checkpoint(tmp_path):
    """The audit's one model call works on an eIP checkpoint and feeds `audit_arrays`."""
    from model_fixtures import tiny_model

    from eip_al.audit import audit_arrays, audit_metrics, predict_checkpoint
    from eip_al.io import attach_labels
    from eip_al.model.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "model.pt", tiny_model())
    rng = np.random.default_rng(5)
    frames = [water_box(np.full(8, 104.5), rng.normal(0.97, 0.03, (8, 2)), rng) for _ in range(3)]
    for a in frames:
        attach_labels(a, -100.0, rng.normal(size=(len(a), 3)))
    preds = predict_checkpoint(ckpt, frames)
    m = audit_metrics(audit_arrays(frames, preds))
    assert m["n_frames"] == 3 and m["n_atoms"] == 72 and np.isfinite(m["force_mae"])
    for p in preds:
        assert p["config_uncertainty"] == pytest.approx(np.mean(p["uncertainty"]))


# ============================================================================ geometry, failures, traces
def test_rdf_of_an_ideal_gas_is_one_and_a_dimer_peaks_at_its_bond():
    from ase import Atoms

    from eip_al.report.sections.geometry import radial_distribution

    rng = np.random.default_rng(0)
    gas = [Atoms("O200", positions=rng.uniform(0, 14, (200, 3)), cell=[14] * 3, pbc=True) for _ in range(5)]
    r, g = radial_distribution(gas)
    assert g[r > 2].mean() == pytest.approx(1.0, abs=0.03)
    pair = Atoms("O2", positions=[[1, 1, 1], [3.3, 1, 1]], cell=[30] * 3, pbc=True)
    r, g = radial_distribution([pair])
    assert r[np.argmax(g)] == pytest.approx(2.3, abs=0.05)
    assert radial_distribution([Atoms("O2", positions=[[0, 0, 0], [1, 0, 0]])]) is None  # not periodic


def test_geometry_section_equals_recomputed_minimum_distances(built):
    from eip_al.screening import smallest_pair_distances

    s, reports = built
    run, rep = s.run, reports[0]
    table = pd.read_csv(run.step_dir(0, "report") / "geometry.csv").set_index("frames")
    selected = read(run.abs(SelectionResult.load(run.artifact_path(0, "select")).selected_extxyz), ":")
    dataset = read(run.abs(run.dataset_for(0).dataset_extxyz), ":")
    for name, frames in (("selected", selected), ("dataset", dataset)):
        assert table.loc[name, "n_frames"] == len(frames)
        for pair, d in smallest_pair_distances(frames).items():
            assert table.loc[name, f"{pair} min (Å)"] == pytest.approx(d)
            assert rep.numbers[f"min_distance.{name}.{pair}"] == pytest.approx(d)
    assert {"pair_min_distances.png", "rdf.png"} <= {Path(f).name for f in rep.figures}


def test_label_failures_are_broken_down_by_walker_and_kind(built):
    s, _ = built
    run = s.run
    outcomes = LabelingResult.load(run.artifact_path(0, "label")).outcomes
    selected = read(run.abs(SelectionResult.load(run.artifact_path(0, "select")).selected_extxyz), ":")
    walker_of = {a.info["frame_id"]: a.info["walker"] for a in selected}
    expected = pd.Series([(walker_of[o.frame_id], o.failure_class) for o in outcomes if o.status == "failed"])
    table = pd.read_csv(run.step_dir(0, "report") / "label_failures_by_walker.csv")
    assert table["failed"].sum() == len(expected) > 0
    for (walker, cls), n in expected.value_counts().items():
        row = table[(table["walker"] == walker) & (table["failure_class"] == cls)]
        assert int(row["failed"].sum()) == n
        assert set(row["kind"]) == {walker.split("-")[0]}


def test_selected_frames_are_marked_on_the_traces():
    from eip_al.report.figures import energy_sigma_vs_time

    t = np.arange(0.0, 100.0, 5.0)
    log = pd.DataFrame({"time_fs": t, "energy": -t, "sigma": 0.1 + t / 1000})
    fig = energy_sigma_vs_time({"md-300K-0": log}, {"md-300K-0": "md"}, {"md-300K-0": None}, None, None,
                               {"md-300K-0": [20.0, 45.0]})
    ax_e, ax_s = fig.axes
    marks = [ln for ln in ax_e.lines if ln.get_marker() == "o"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [20.0, 45.0]
    assert list(marks[0].get_ydata()) == [-20.0, -45.0]  # on the energy trace
    assert [ln for ln in ax_s.lines if ln.get_marker() == "o"][0].get_ydata()[1] == pytest.approx(0.145)
    assert "total" in ax_e.get_ylabel() and "(eV)" in ax_e.get_ylabel() and "(eV/Å)" in ax_s.get_ylabel()


def test_steps_and_wall_times_in_pipeline_order_and_wide_tables_scroll(built):
    from eip_al.schemas import STEPS

    s, _ = built
    out = s.run.step_dir(0, "report")
    assert pd.read_csv(out / "steps.csv")["step"].tolist() == list(STEPS)  # the report step included
    wall = pd.read_csv(s.run.root / "summary" / "wall_times.csv")
    for _, g in wall.groupby("generation"):
        assert g["step"].tolist() == [x for x in STEPS if x in set(g["step"])]
    html_text = (out / "report.html").read_text()
    assert html_text.count("<table>") == html_text.count('<div class="table-wrap"><table>') > 0
