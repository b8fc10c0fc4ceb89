"""Generation-0 data: seed MD with the mock force field, its resume, and user seed files."""

from __future__ import annotations

import os
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from conftest import WATER_DFT
from vesin import NeighborList

import eip_al.seed as seed_mod
from eip_al.config import ALConfig, ConfigError, config_from_mapping
from eip_al.data import load_dataset
from eip_al.io import FrameError, attach_labels
from eip_al.label.mock import MockLabeler, MockWaterCalculator, water_energy_forces
from eip_al.mdstate import load_md_state
from eip_al.rundir import RunDir
from eip_al.schemas import LabelingResult
from eip_al.seed import SeedError, make_seed, sample_seed_md
from eip_al.systems import build_water_box, water_density_g_cm3, water_topology


def config(tmp_path: Path, **sections: dict) -> ALConfig:
    data = {
        "system": {"kind": "water", "n_molecules": 8},
        "seed_data": {"n_frames": 10, "equilibration_steps": 20, "stride": 5},
        "run_dir": str(tmp_path / "run"),
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return config_from_mapping(data)


def new_run(cfg: ALConfig) -> RunDir:
    run = RunDir(cfg.resolved_run_dir())
    run.init(cfg)
    return run


def oo_rdf(frames: list[Atoms], r_max: float, dr: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """O–O radial distribution function averaged over periodic frames (r < r_max ≤ L/2)."""
    edges = np.arange(0.0, r_max + dr, dr)
    counts = np.zeros(len(edges) - 1)
    n_o = 0
    volume = frames[0].cell.volume
    for atoms in frames:
        o = atoms[atoms.numbers == 8]
        n_o = len(o)
        _, _, d = NeighborList(cutoff=r_max, full_list=False).compute(
            o.positions, o.cell[:], True, "ijd"
        )
        counts += np.histogram(d, edges)[0]
    shell = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    ideal = len(frames) * n_o * (n_o - 1) / 2 / volume * shell
    return (edges[1:] + edges[:-1]) / 2, counts / ideal


def test_seed_md_gives_sane_liquid_water_with_labels(tmp_path: Path) -> None:
    """32 waters at 0.997 g/cm³, 300 K: every frame keeps the configured density (NVT,
    fixed box) and intact molecules; the O–O g(r) has its first peak at 2.6–3.0 Å (water:
    2.8 Å) with height > 1.8, and no O–O pair closer than 2.2 Å; labels are the force field's."""
    cfg = config(
        tmp_path,
        system={"n_molecules": 32, "density_g_cm3": 0.997},
        seed_data={"n_frames": 30, "equilibration_steps": 800, "stride": 20},
    )
    run = new_run(cfg)
    manifest = make_seed(cfg, run)
    assert manifest.generation == -1 and manifest.n_frames == 30
    assert manifest.counts_by_source == {"seed": 30}
    assert manifest.theory == MockLabeler().theory()
    frames = load_dataset(run, manifest)
    steps = sorted(a.info["step"] for a in frames)
    assert steps == [800 + 20 * k for k in range(1, 31)]
    for atoms in frames:
        assert water_density_g_cm3(atoms) == pytest.approx(0.997, rel=1e-9)
        o, h1, h2 = water_topology(atoms)
        oh = np.concatenate(
            [atoms.get_distances(o[k], [h1[k], h2[k]], mic=True) for k in range(len(o))]
        )
        assert oh.min() > 0.85 and oh.max() < 1.2
        assert atoms.info["source"] == "seed" and atoms.info["labeler"] == "mock"
        energy, forces = water_energy_forces(atoms)
        assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-6)
        assert np.allclose(atoms.get_forces(), forces, atol=1e-5)
    r, g = oo_rdf(frames, r_max=frames[0].cell[0, 0] / 2)
    first = r < 3.3  # the first shell
    assert 2.6 <= r[first][np.argmax(g[first])] <= 3.0
    assert g[first].max() > 1.8
    assert g[r < 2.2].max() == 0.0
    # stride-separated frames differ (the trajectory moves between samples)
    by_step = sorted(frames, key=lambda a: a.info["step"])
    moves = [np.abs(a.positions - b.positions).max() for a, b in pairwise(by_step)]
    assert min(moves) > 0.05


def test_valid_seed_is_returned_without_work(tmp_path: Path, monkeypatch) -> None:
    cfg = config(tmp_path)
    run = new_run(cfg)
    first = make_seed(cfg, run)

    def no_work(*args, **kwargs):
        raise AssertionError("seed recomputed although its artifact is valid")

    monkeypatch.setattr(seed_mod, "sample_seed_md", no_work)
    monkeypatch.setattr(seed_mod, "label_seed_frames", no_work)
    assert make_seed(cfg, run) == first


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize(
    ("crash_call", "every_chunk", "saved_step", "saved_frames"),
    [
        (12, True, 9, 0),  # during equilibration (20 steps), checkpointing every 3-step chunk
        (48, False, 40, 4),  # while sampling (every 5 steps from step 25), every 2 frames
    ],
)
def test_interrupted_md_resumes_the_same_trajectory(
    tmp_path: Path,
    monkeypatch,
    crash_call: int,
    every_chunk: bool,
    saved_step: int,
    saved_frames: int,
) -> None:
    cfg = config(tmp_path)
    reference = sample_seed_md(cfg, tmp_path / "uninterrupted")

    monkeypatch.setattr(seed_mod, "MD_CHUNK", 3)
    monkeypatch.setattr(seed_mod, "CHECKPOINT_FRAMES", 2)
    if every_chunk:
        monkeypatch.setattr(seed_mod, "CHECKPOINT_S", 0.0)
    calls = {"n": 0, "limit": crash_call}
    original = MockWaterCalculator.calculate

    def counting(self, *args, **kwargs):
        calls["n"] += 1  # one call for the initial forces, then one per MD step
        if calls["n"] == calls["limit"]:
            raise Crash("killed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MockWaterCalculator, "calculate", counting)
    with pytest.raises(Crash):
        sample_seed_md(cfg, tmp_path / "md")
    state = load_md_state(tmp_path / "md" / "state.npz", seed_mod._settings_key(cfg))
    assert state is not None
    assert state.meta["step"] == saved_step and state.meta["n_frames"] == saved_frames
    calls["n"], calls["limit"] = 0, -1
    resumed = sample_seed_md(cfg, tmp_path / "md")
    assert calls["n"] == 1 + 70 - saved_step  # continued where it stopped (70 steps in all)
    assert len(resumed) == len(reference) == 10
    for a, b in zip(resumed, reference, strict=True):
        assert a.info["step"] == b.info["step"]
        assert np.array_equal(a.positions, b.positions)


def test_seed_labeling_resumes_per_job(tmp_path: Path, monkeypatch) -> None:
    cfg = config(tmp_path)
    run = new_run(cfg)
    make_seed(cfg, run)
    jobs = sorted(p for p in (run.seed_dir / "label" / "jobs").iterdir() if p.is_dir())
    assert len(jobs) == 10
    stamps = {j.name: os.stat(j / "outcome.json").st_mtime_ns for j in jobs}
    # as if killed while labeling: no dataset yet, one job unfinished
    (run.seed_dir / "artifact.json").unlink()
    for name in ("outcome.json", "result.json"):
        (jobs[3] / name).unlink()
    calls = {"n": 0}
    original = MockWaterCalculator.calculate

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MockWaterCalculator, "calculate", counting)
    manifest = make_seed(cfg, run)
    assert calls["n"] == 0  # no MD rerun
    assert manifest.n_frames == 10
    for j in jobs:
        if j != jobs[3]:
            assert os.stat(j / "outcome.json").st_mtime_ns == stamps[j.name]
    assert (jobs[3] / "outcome.json").exists()


def test_injected_failures_drop_frames_or_stop_the_seed(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        seed_data={"n_frames": 20},
        labeler={"mock": {"failure_rate": 0.3, "seed": 2}, "max_failure_fraction": 0.8},
    )
    run = new_run(cfg)
    manifest = make_seed(cfg, run)
    labels = LabelingResult.load(run.seed_dir / "label" / "artifact.json")
    n_injected = labels.failures_by_class.get("injected", 0)
    assert 0 < n_injected < 20 and labels.n_failed == n_injected
    assert manifest.n_frames == labels.n_ok == 20 - n_injected
    failed = {o.frame_id for o in labels.outcomes if o.status == "failed"}
    assert not failed & {a.info["frame_id"] for a in load_dataset(run, manifest)}

    strict = config(
        tmp_path / "strict",
        seed_data={"n_frames": 20},
        labeler={"mock": {"failure_rate": 0.3, "seed": 2}, "max_failure_fraction": 0.05},
    )
    run = new_run(strict)
    with pytest.raises(SeedError, match="seed labels failed: .*injected"):
        make_seed(strict, run)
    assert not (run.seed_dir / "artifact.json").exists()


def test_md_seed_needs_a_water_system(tmp_path: Path) -> None:
    from ase.build import bulk

    write(tmp_path / "si.cif", bulk("Si", cubic=True))
    cfg = config(tmp_path, system={"kind": "file", "structure_file": str(tmp_path / "si.cif")})
    with pytest.raises(ConfigError, match="not pure water"):
        make_seed(cfg, new_run(cfg))


# ------------------------------------------------------------------------ user seed files
def labelled_water_frames(n: int) -> list[Atoms]:
    out = []
    for k in range(n):
        atoms = build_water_box(8, seed=k)
        attach_labels(atoms, *water_energy_forces(atoms))
        out.append(atoms)
    return out


def test_user_seed_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.extxyz"
    write(path, labelled_water_frames(5), format="extxyz")
    cfg = config(tmp_path, seed_data={"source": "file", "file": str(path)})
    run = new_run(cfg)
    manifest = make_seed(cfg, run)
    assert manifest.n_frames == 5 and manifest.counts_by_source == {"user": 5}
    assert manifest.theory.code == "external"  # unknown level of theory: never mixed silently
    frames = load_dataset(run, manifest)
    assert all(a.info["source"] == "user" for a in frames)
    ref = labelled_water_frames(5)
    assert sorted(a.get_potential_energy() for a in frames) == pytest.approx(
        sorted(a.get_potential_energy() for a in ref)
    )


def test_user_seed_from_an_eip_al_dataset_keeps_its_theory(tmp_path: Path) -> None:
    cfg = config(tmp_path / "a")
    run = new_run(cfg)
    manifest = make_seed(cfg, run)
    user = config(
        tmp_path / "b", seed_data={"source": "file", "file": str(run.abs(manifest.dataset_extxyz))}
    )
    reused = make_seed(user, new_run(user))
    assert reused.theory == manifest.theory and reused.n_frames == manifest.n_frames


@pytest.mark.skipif(not WATER_DFT.exists(), reason="shared water DFT data not present")
def test_real_dft_water_as_user_seed(tmp_path: Path) -> None:
    from ase.io import read

    path = tmp_path / "dft.extxyz"
    write(path, read(WATER_DFT, index=":4"), format="extxyz")
    cfg = config(tmp_path, seed_data={"source": "file", "file": str(path)})
    manifest = make_seed(cfg, new_run(cfg))
    assert manifest.n_frames == 4 and manifest.theory.code == "external"


def bad_files() -> dict[str, tuple[str, str]]:
    """name -> (how the file is broken, the error expected)."""
    return {
        "no_energy": ("energy", r"frame 2: missing energy"),
        "no_forces": ("forces", r"frame 2: missing forces"),
        "no_cell": ("cell", r"frame 2: pbc must be True"),
        "alien_element": ("element", r"frame 2: element\(s\) \['Na'\] not in the allowed set"),
        "nan_forces": ("nan", r"frame 2: forces contain NaN"),
    }


@pytest.mark.parametrize("case", list(bad_files()))
def test_bad_user_seed_files_are_rejected(tmp_path: Path, case: str) -> None:
    how, message = bad_files()[case]
    frames = labelled_water_frames(4)
    bad = frames[2]
    if how in ("energy", "forces"):
        e, f = bad.get_potential_energy(), bad.get_forces()
        bad.calc = None
        if how == "energy":
            bad.arrays["forces"] = f
        else:
            bad.info["energy"] = e
    elif how == "cell":
        bad.pbc = False
        bad.cell = np.zeros((3, 3))
    elif how == "element":
        bad.numbers[5] = 11
    elif how == "nan":
        bad.calc.results["forces"][0, 0] = np.nan
    path = tmp_path / f"{case}.extxyz"
    write(path, frames, format="extxyz")
    before = path.read_bytes()
    cfg = config(tmp_path, seed_data={"source": "file", "file": str(path)})
    run = new_run(cfg)
    with pytest.raises(FrameError, match=f"{case}.extxyz: {message}"):
        make_seed(cfg, run)
    assert path.read_bytes() == before and not (run.seed_dir / "artifact.json").exists()


def test_missing_or_unreadable_user_seed_file(tmp_path: Path) -> None:
    cfg = config(tmp_path, seed_data={"source": "file", "file": str(tmp_path / "nope.extxyz")})
    with pytest.raises(FrameError, match="nope.extxyz: file not found"):
        make_seed(cfg, new_run(cfg))
    junk = tmp_path / "junk.extxyz"
    junk.write_text("3\nnot an extxyz header\nO 0 0\n")
    cfg = config(tmp_path / "j", seed_data={"source": "file", "file": str(junk)})
    with pytest.raises(FrameError, match="junk.extxyz: frame 0: cannot read"):
        make_seed(cfg, new_run(cfg))
