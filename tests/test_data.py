"""Dataset merging: provenance round trip, dedup, theory check, fixed splits, crash safety."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from eip_al.config import ALConfig, ConfigError, MergeConfig
from eip_al.data import (
    TheoryMismatchError,
    load_dataset,
    merge_generation,
    rule_split,
    split_frames,
    split_score,
    write_dataset,
)
from eip_al.integrity import IntegrityError
from eip_al.io import FrameError, attach_labels, frame_id, write_frames
from eip_al.rundir import RunDir, RunDirError, load_valid
from eip_al.schemas import DatasetManifest, JobOutcome, LabelingResult, TheoryFingerprint

MOCK = TheoryFingerprint(code="mock-qspcfw", method="q-SPC/Fw")
CP2K = TheoryFingerprint(code="cp2k", method="PBE-D3(BJ)", cutoff_ry=400.0)


def make_frame(rng: np.random.Generator, source: str = "seed", **info: object) -> Atoms:
    """A labelled 3-atom periodic frame with random positions and labels."""
    atoms = Atoms("OH2", positions=rng.uniform(0, 4, (3, 3)), cell=[5.0, 5.0, 5.0], pbc=True)
    attach_labels(atoms, float(rng.normal(-10, 1)), rng.normal(size=(3, 3)))
    atoms.info.update(source=source, **info)
    return atoms


def make_seed(
    run: RunDir, n: int, rng: np.random.Generator, cfg: MergeConfig | None = None
) -> DatasetManifest:
    frames = [make_frame(rng) for _ in range(n)]
    return write_dataset(frames, run.seed_dir, -1, MOCK, cfg or MergeConfig(), run)


def write_labels(
    run: RunDir, gen: int, frames: list[Atoms], theory: TheoryFingerprint = MOCK
) -> LabelingResult:
    """What the label step leaves: labeled.extxyz (plain io.write_frames) + LabelingResult."""
    label_dir = run.step_dir(gen, "label")
    outcomes = []
    for k, atoms in enumerate(frames):
        fid = atoms.info.setdefault("frame_id", frame_id(atoms))
        job = f"{gen:02d}{k:04d}"  # leading zeros: read back as an int by ASE
        atoms.info.update(job_id=job, labeler="mock", generation=gen)
        outcomes.append(JobOutcome(job_id=job, frame_id=fid, status="ok"))
    write_frames(label_dir / "labeled.extxyz", frames)
    result = LabelingResult(
        generation=gen,
        labeler="mock",
        backend="local",
        theory=theory,
        outcomes=outcomes,
        n_ok=len(frames),
        n_failed=0,
        failures_by_class={},
        labeled_extxyz=run.rel(label_dir / "labeled.extxyz"),
    )
    result.write(run.artifact_path(gen, "label"))
    return result


def new_labels(rng: np.random.Generator, n: int, gen: int) -> list[Atoms]:
    return [
        make_frame(
            rng,
            source=("md", "udd")[k % 2],
            walker=f"md-300K-{k % 2}",
            step=10 * k,
            time_fs=5.0 * k,
        )
        for k in range(n)
    ]


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    return RunDir(tmp_path / "run")


# ---------------------------------------------------------------------------- seed / round trip
def test_seed_round_trip_keeps_labels_and_provenance(run: RunDir) -> None:
    rng = np.random.default_rng(1)
    frames = [make_frame(rng, job_id="000123", walker="T", step=3, time_fs=1.5) for _ in range(12)]
    frames[0].info["source"] = "user"
    frames[1].info["frame_id"] = "12345678901234567890"  # all digits: would read back as a float
    frames[2].info["walker"] = None  # unknown provenance is omitted, not written as None
    m = write_dataset(frames, run.seed_dir, -1, MOCK, MergeConfig(), run)

    assert m.dataset_extxyz == "seed/dataset.extxyz" and m.generation == -1
    assert (run.seed_dir / "artifact.json").exists()
    assert DatasetManifest.load(run.seed_dir / "artifact.json") == m
    assert m.counts_by_source == {"user": 1, "seed": 11}
    assert m.counts_by_generation == {"-1": 12}
    assert sum(m.split_counts.values()) == m.n_frames == 12
    assert m.counts_by_theory == {MOCK.key(): 12}

    back = load_dataset(run, m)
    assert len(back) == 12
    for src, got in zip(frames, back, strict=True):
        assert got.get_potential_energy() == pytest.approx(src.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(
            got.get_forces(), src.get_forces(), atol=1e-8
        )  # extxyz: 8 decimals
        assert got.info["job_id"] == "000123" and isinstance(got.info["step"], int)
        assert got.info["theory"] == MOCK.key() and got.info["generation"] == -1
        assert got.info["split"] in ("train", "valid", "test")
    assert back[1].info["frame_id"] == "12345678901234567890"
    assert back[0].info["frame_id"] == frame_id(frames[0])
    assert back[3].info["walker"] == "T" and "walker" not in back[2].info
    # the caller's frames are not modified
    assert "split" not in frames[3].info and "frame_id" not in frames[3].info
    assert {k: len(v) for k, v in split_frames(back).items()} == m.split_counts


def test_new_frames_need_labels_source_and_known_split(run: RunDir) -> None:
    rng = np.random.default_rng(2)
    good = make_frame(rng)
    unlabeled = Atoms(
        "H2", positions=[[0, 0, 0], [0, 0, 0.7]], cell=[4, 4, 4], pbc=True, info={"source": "seed"}
    )
    with pytest.raises(FrameError, match=r"new frame 1: missing energy"):
        write_dataset([good, unlabeled], run.seed_dir, -1, MOCK, MergeConfig(), run)
    bad = make_frame(rng)
    bad.info["source"] = "dft"
    with pytest.raises(FrameError, match=r"new frame 0 .*'source'"):
        write_dataset([bad], run.seed_dir, -1, MOCK, MergeConfig(), run)
    nan = make_frame(rng)
    nan.calc.results["forces"][1, 2] = np.nan
    with pytest.raises(FrameError, match=r"new frame 0: forces contain NaN"):
        write_dataset([nan], run.seed_dir, -1, MOCK, MergeConfig(), run)
    with pytest.raises(ValueError, match="must be below 1"):  # refused at config load now
        MergeConfig(valid_fraction=0.5, test_fraction=0.5)
    unchecked = MergeConfig.model_construct(valid_fraction=0.5, test_fraction=0.5)  # a bypassed config
    with pytest.raises(ConfigError, match="valid_fraction \\+ merge.test_fraction"):
        write_dataset([good], run.seed_dir, -1, MOCK, unchecked, run)
    assert not run.seed_dir.exists()  # nothing written on refusal


# ---------------------------------------------------------------------------- split rule
def test_split_rule_is_order_independent_and_seeded(run: RunDir) -> None:
    rng = np.random.default_rng(3)
    frames = [make_frame(rng) for _ in range(40)]
    m1 = write_dataset(frames, run.root / "a", -1, MOCK, MergeConfig(), run)
    shuffled = list(frames)
    random.Random(0).shuffle(shuffled)
    m2 = write_dataset(shuffled, run.root / "b", -1, MOCK, MergeConfig(), run)
    m3 = write_dataset(frames, run.root / "c", -1, MOCK, MergeConfig(seed=7), run)
    by_id = [
        {a.info["frame_id"]: a.info["split"] for a in load_dataset(run, m)} for m in (m1, m2, m3)
    ]
    assert by_id[0] == by_id[1]
    assert by_id[0] != by_id[2]
    cfg = MergeConfig()
    for fid, split in by_id[0].items():
        assert split == rule_split(split_score(fid, cfg.seed), cfg)


def test_split_rule_fractions() -> None:
    cfg = MergeConfig(valid_fraction=0.2, test_fraction=0.1)
    splits = [rule_split(split_score(f"frame-{i}", 0), cfg) for i in range(4000)]
    assert splits.count("test") / 4000 == pytest.approx(0.1, abs=0.02)
    assert splits.count("valid") / 4000 == pytest.approx(0.2, abs=0.02)
    assert rule_split(0.05, cfg) == "test" and rule_split(0.15, cfg) == "valid"
    assert rule_split(0.35, cfg) == "train"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_datasets_get_train_and_valid(run: RunDir, n: int) -> None:
    rng = np.random.default_rng(4)
    for seed in range(12):
        cfg = MergeConfig(valid_fraction=0.3, test_fraction=0.3, seed=seed)
        m = write_dataset(
            [make_frame(rng) for _ in range(n)], run.root / f"{n}-{seed}", -1, MOCK, cfg, run
        )
        assert m.split_counts["train"] >= 1
        assert m.split_counts["valid"] >= (1 if n >= 2 else 0)
    m = write_dataset(
        [make_frame(rng) for _ in range(5)],
        run.root / "novalid",
        -1,
        MOCK,
        MergeConfig(valid_fraction=0.0, test_fraction=0.0),
        run,
    )
    assert m.split_counts == {"train": 5, "valid": 0, "test": 0}


# ---------------------------------------------------------------------------- merge
def test_merge_counts_provenance_and_dedup(run: RunDir) -> None:
    rng = np.random.default_rng(5)
    seed = make_seed(run, 10, rng)
    seed_frames = load_dataset(run, seed)
    labels = new_labels(rng, 6, gen=0)
    dup_of_seed = seed_frames[4].copy()  # same structure explored again
    attach_labels(dup_of_seed, -1.0, np.zeros((3, 3)))
    # carries another id (e.g. hashed before rounding by the writer): caught by content
    dup_of_seed.info = {"source": "md", "walker": "md-300K-0", "step": 70, "frame_id": "explorer-7"}
    dup_within = labels[2].copy()
    attach_labels(dup_within, labels[2].get_potential_energy(), labels[2].get_forces())
    dup_within.info = {"source": "udd", "walker": "udd-300K-0", "step": 80}
    write_labels(run, 0, labels + [dup_of_seed, dup_within])

    m = merge_generation(ALConfig(), run, 0)
    assert m.generation == 0 and m.dataset_extxyz == "gen-000/merge/dataset.extxyz"
    assert m.parent == "seed/artifact.json"
    assert m.n_duplicates_dropped == 2 and m.n_frames == 16
    assert m.counts_by_generation == {"-1": 10, "0": 6}
    assert m.counts_by_source == {"seed": 10, "md": 3, "udd": 3}
    assert sum(m.split_counts.values()) == 16
    assert run.dataset_for(1) == m

    merged = load_dataset(run, m)
    assert [a.info["frame_id"] for a in merged[:10]] == [a.info["frame_id"] for a in seed_frames]
    for old, new in zip(seed_frames, merged[:10], strict=True):
        assert new.info == old.info
        assert (
            new.get_potential_energy() == old.get_potential_energy()
        )  # the duplicate's label is not used
    for k, (src, got) in enumerate(zip(labels, merged[10:], strict=True)):
        assert got.info["frame_id"] == frame_id(src)
        assert got.info["job_id"] == f"00{k:04d}"  # restored from the LabelingResult
        assert got.info["generation"] == 0 and got.info["labeler"] == "mock"
        assert got.info["walker"] == src.info["walker"] and got.info["step"] == src.info["step"]
        assert got.info["time_fs"] == pytest.approx(src.info["time_fs"])
        assert got.info["theory"] == MOCK.key()
        np.testing.assert_allclose(
            got.get_forces(), src.get_forces(), atol=1e-8
        )  # extxyz: 8 decimals


def test_same_frame_id_different_structure_is_an_error(run: RunDir) -> None:
    rng = np.random.default_rng(6)
    seed = make_seed(run, 4, rng)
    impostor = make_frame(rng, source="md", frame_id=load_dataset(run, seed)[0].info["frame_id"])
    write_labels(run, 0, [impostor])
    with pytest.raises(FrameError, match="already used in this dataset by a different structure"):
        merge_generation(ALConfig(), run, 0)
    assert not run.artifact_path(0, "merge").exists()


def test_bad_label_frame_is_rejected_naming_the_frame(run: RunDir) -> None:
    rng = np.random.default_rng(7)
    make_seed(run, 4, rng)
    labels = new_labels(rng, 3, gen=0)
    write_labels(run, 0, labels)
    path = run.step_dir(0, "label") / "labeled.extxyz"
    text = path.read_text().splitlines()
    text[6] = text[6].replace("energy=", "energy=nan ignored=")  # frame 1
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(FrameError, match=r"labeled\.extxyz: frame 1: energy is not finite"):
        merge_generation(ALConfig(), run, 0)


def test_label_count_mismatch_is_detected(run: RunDir) -> None:
    rng = np.random.default_rng(8)
    make_seed(run, 4, rng)
    result = write_labels(run, 0, new_labels(rng, 3, gen=0))
    result.n_ok = 4
    result.write(run.artifact_path(0, "label"))
    with pytest.raises(FrameError, match="has 3 labelled frames .* n_ok=4"):
        merge_generation(ALConfig(), run, 0)


def test_missing_label_step_is_a_clear_error(run: RunDir) -> None:
    make_seed(run, 3, np.random.default_rng(9))
    with pytest.raises(RunDirError, match="no labeling result for generation 0"):
        merge_generation(ALConfig(), run, 0)


# ---------------------------------------------------------------------------- theory
def test_theory_mismatch_is_refused_unless_allowed(run: RunDir) -> None:
    rng = np.random.default_rng(10)
    make_seed(run, 5, rng)
    write_labels(run, 0, new_labels(rng, 3, gen=0), theory=CP2K)
    with pytest.raises(TheoryMismatchError) as err:
        merge_generation(ALConfig(), run, 0)
    assert CP2K.key() in str(err.value) and MOCK.key() in str(err.value)
    assert "allow_theory_mismatch" in str(err.value)
    assert not run.artifact_path(0, "merge").exists()

    cfg = ALConfig(merge=MergeConfig(allow_theory_mismatch=True))
    m = merge_generation(cfg, run, 0)
    assert m.theory == CP2K
    assert m.counts_by_theory == {MOCK.key(): 5, CP2K.key(): 3}
    assert any("theory mismatch" in note for note in m.notes)


def test_frame_theory_must_match_its_labels(run: RunDir) -> None:
    rng = np.random.default_rng(11)
    make_seed(run, 3, rng)
    labels = new_labels(rng, 2, gen=0)
    labels[1].info["theory"] = CP2K.key()  # a CP2K label inside a mock labelling result
    write_labels(run, 0, labels)
    with pytest.raises(TheoryMismatchError, match=rf"new frame 1 .*theory {CP2K.key()}"):
        merge_generation(ALConfig(), run, 0)


# ---------------------------------------------------------------------------- stability
def test_splits_stable_across_three_generations(run: RunDir) -> None:
    rng = np.random.default_rng(12)
    cfg = ALConfig(merge=MergeConfig(valid_fraction=0.2, test_fraction=0.2, seed=3))
    seed = make_seed(run, 8, rng, cfg.merge)
    history = {a.info["frame_id"]: a.info["split"] for a in load_dataset(run, seed)}
    previous = seed
    for gen in range(3):
        if gen == 2:  # changed split settings (a forked run) must not move any existing frame
            cfg = ALConfig(merge=MergeConfig(valid_fraction=0.4, test_fraction=0.3, seed=11))
        labels = new_labels(rng, 7, gen)
        old = load_dataset(run, previous)
        redo = old[gen].copy()  # one already-known structure per generation
        attach_labels(redo, 0.0, np.zeros((3, 3)))
        redo.info = {"source": "md"}
        write_labels(run, gen, labels + [redo])
        m = merge_generation(cfg, run, gen)
        frames = load_dataset(run, m)
        splits = {a.info["frame_id"]: a.info["split"] for a in frames}
        for fid, split in history.items():
            assert splits[fid] == split, f"frame {fid} moved from {split} to {splits[fid]}"
        assert m.n_frames == previous.n_frames + 7 and m.n_duplicates_dropped == 1
        assert m.counts_by_generation[str(gen)] == 7
        assert sum(m.counts_by_generation.values()) == m.n_frames == sum(m.split_counts.values())
        for split, n in m.split_counts.items():
            assert n == previous.split_counts[split] + sum(
                1 for a in frames if a.info["generation"] == gen and a.info["split"] == split
            )
        for a in frames:
            if a.info["generation"] == gen:
                score = split_score(a.info["frame_id"], cfg.merge.seed)
                assert a.info["split"] == rule_split(score, cfg.merge)
        history = splits
        previous = m
    assert m.counts_by_generation == {"-1": 8, "0": 7, "1": 7, "2": 7}
    assert set(m.split_counts) == {"train", "valid", "test"} and m.split_counts["test"] > 0


# ---------------------------------------------------------------------------- integrity / crash
def test_tampered_dataset_is_detected(run: RunDir) -> None:
    m = make_seed(run, 4, np.random.default_rng(13))
    path = run.abs(m.dataset_extxyz)
    text = path.read_text()
    path.write_text(text.replace("split=train", "split=Train", 1))  # same size, other bytes
    with pytest.raises(IntegrityError, match=r"changed since it was written \(sha256 differs\); the seed step"):
        load_dataset(run, m)
    path.write_text(text.replace("split=train", "split=test", 1))
    with pytest.raises(IntegrityError, match=r"has \d+ bytes, \d+ when written") as err:
        load_dataset(run, m)
    assert "\n" not in str(err.value) and "--redo seed" in str(err.value)
    path.unlink()
    with pytest.raises(IntegrityError, match="dataset.extxyz: is missing"):
        load_dataset(run, m)


def test_parent_directory_is_never_written(run: RunDir) -> None:
    rng = np.random.default_rng(14)
    seed = make_seed(run, 4, rng)
    before = snapshot(run.seed_dir)
    with pytest.raises(RunDirError, match="parent's directory"):
        write_dataset(
            [make_frame(rng, source="md")], run.seed_dir, 0, MOCK, MergeConfig(), run, parent=seed
        )
    assert snapshot(run.seed_dir) == before


def test_crash_between_dataset_and_manifest_leaves_consistent_state(
    run: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(15)
    make_seed(run, 6, rng)
    write_labels(run, 0, new_labels(rng, 4, gen=0))
    merge_generation(ALConfig(), run, 0)
    write_labels(run, 1, new_labels(rng, 4, gen=1))
    before = snapshot(run.root)

    def crash(self: DatasetManifest, path: Path) -> Path:
        raise KeyboardInterrupt("killed between dataset and manifest")

    with monkeypatch.context() as mp:
        mp.setattr(DatasetManifest, "write", crash)
        with pytest.raises(KeyboardInterrupt):
            merge_generation(ALConfig(), run, 1)
    # the new dataset file is there, but without a manifest it is not a dataset
    assert run.abs("gen-001/merge/dataset.extxyz").exists()
    assert load_valid(run.artifact_path(1, "merge"), DatasetManifest) is None
    with pytest.raises(RunDirError):
        run.dataset_for(2)
    after = {k: v for k, v in snapshot(run.root).items() if not k.startswith("gen-001/merge/")}
    assert after == before  # previous generations byte-identical

    m = merge_generation(ALConfig(), run, 1)
    assert run.dataset_for(2) == m and m.n_frames == 14
    assert len(load_dataset(run, m)) == 14

    # A crash while re-merging over a finished merge drops the old manifest first, so the
    # old manifest is never paired with a new dataset file.
    write_labels(run, 1, new_labels(rng, 5, gen=1))
    with monkeypatch.context() as mp:
        mp.setattr(DatasetManifest, "write", crash)
        with pytest.raises(KeyboardInterrupt):
            merge_generation(ALConfig(), run, 1)
    assert load_valid(run.artifact_path(1, "merge"), DatasetManifest) is None
    assert merge_generation(ALConfig(), run, 1).n_frames == 15


def test_crash_while_writing_dataset_keeps_old_files(
    run: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(16)
    make_seed(run, 5, rng)
    write_labels(run, 0, new_labels(rng, 3, gen=0))
    first = merge_generation(ALConfig(), run, 0)
    old_bytes = run.abs(first.dataset_extxyz).read_bytes()
    write_labels(run, 0, new_labels(rng, 4, gen=0))

    import ase.io

    real_write = ase.io.write

    def half_write(path: Path, frames: list[Atoms], **kw: object) -> None:
        real_write(path, frames[:2], **kw)
        raise OSError("disk full")

    monkeypatch.setattr("eip_al.io.write", half_write)
    with pytest.raises(OSError, match="disk full"):
        merge_generation(ALConfig(), run, 0)
    monkeypatch.undo()
    merge_dir = run.step_dir(0, "merge")
    assert run.abs(first.dataset_extxyz).read_bytes() == old_bytes  # not half-overwritten
    assert sorted(p.name for p in merge_dir.iterdir()) == [
        "dataset.extxyz"
    ]  # no temp left, no manifest
    assert merge_generation(ALConfig(), run, 0).n_frames == 9


def test_unstorable_strings_and_outside_paths_are_refused(run: RunDir, tmp_path: Path) -> None:
    rng = np.random.default_rng(17)
    quoted = make_frame(rng, walker='md "hot"')
    with pytest.raises(FrameError, match=r"frame 0: info 'walker' .* cannot be stored in extxyz"):
        write_dataset([quoted], run.seed_dir, -1, MOCK, MergeConfig(), run)
    assert not (run.seed_dir / "artifact.json").exists()
    with pytest.raises(RunDirError, match="inside the run directory"):
        write_dataset([make_frame(rng)], tmp_path / "elsewhere", -1, MOCK, MergeConfig(), run)
    assert not (tmp_path / "elsewhere").exists()
