"""Generation datasets: the previous dataset plus newly labelled frames, traceable frame by frame.

A dataset is `dataset.extxyz` (labels through SinglePointCalculator, provenance in
``atoms.info``) plus a `DatasetManifest` (`artifact.json`, written LAST). The rules,
documented in docs/data.md:

* provenance keys ``frame_id`` ``generation`` ``source`` ``walker`` ``step`` ``time_fs``
  ``labeler`` ``theory`` ``job_id`` ``split``; an unknown value is an omitted key, never
  None or "";
* dedup: a frame whose ``frame_id`` or content hash (`eip_al.io.frame_id`) is already in
  the dataset is dropped and counted;
* theory: labels whose `TheoryFingerprint` differs from the dataset's are refused
  (`TheoryMismatchError`) unless ``merge.allow_theory_mismatch``;
* splits: a frame keeps its split forever; a new frame gets a seeded hash rule;
* crash safety: the old manifest is removed before the new dataset file is written, so a
  directory holds a manifest only when it matches its file (size and sha256, checked on load), and
  the previous generation's directory is never written to.
"""

from __future__ import annotations

import hashlib
import numbers
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from eip_al import integrity
from eip_al.config import ALConfig, ConfigError, MergeConfig
from eip_al.io import FrameError, frame_id, read_frames, validate_frame, write_frames
from eip_al.registries import BIASES
from eip_al.rundir import ARTIFACT_NAME, RunDir, RunDirError
from eip_al.schemas import DatasetManifest, LabelingResult, TheoryFingerprint

DATASET_NAME = "dataset.extxyz"
SPLITS: tuple[str, ...] = ("train", "valid", "test")
def sources() -> tuple[str, ...]:
    """Valid frame sources: the seed, each walker kind (`registries.BIASES`, read when asked, so a
    registered bias's frames merge like md and udd ones) and user data."""
    return ("seed", *BIASES, "user")


STR_KEYS: tuple[str, ...] = ("frame_id", "source", "walker", "labeler", "theory", "job_id", "split")
INT_KEYS: tuple[str, ...] = ("generation", "step")
FLOAT_KEYS: tuple[str, ...] = ("time_fs",)

# Strings ASE's extxyz writes bare; anything else (or anything its reader would turn into
# a number or bool, e.g. job_id "000123") is written as `_JSON "..."` so it reads back as str.


class TheoryMismatchError(FrameError):
    """Labels of a different level of theory than the dataset's (never mixed silently)."""


class DatasetIntegrityError(FrameError):
    """A dataset file does not match its manifest (modified, partial or missing)."""


# ---------------------------------------------------------------------------- splits
def split_score(fid: str, seed: int) -> float:
    """Uniform number in [0, 1) from (seed, frame_id): same frame, same score, any order."""
    digest = hashlib.sha256(f"{seed}:{fid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def rule_split(score: float, merge_cfg: MergeConfig) -> str:
    """test if score < test_fraction, valid below test+valid fraction, else train."""
    if score < merge_cfg.test_fraction:
        return "test"
    if score < merge_cfg.test_fraction + merge_cfg.valid_fraction:
        return "valid"
    return "train"


def _assign_splits(frames: list[Atoms], free: list[int], merge_cfg: MergeConfig) -> None:
    """Give the frames at indices `free` a split; all other frames keep theirs.

    After the rule, two minimums for tiny datasets, moving free frames only (so no frame
    ever leaves valid/test once written): train gets ≥ 1 frame (the free non-train frame
    with the highest score), and valid gets ≥ 1 frame when valid_fraction > 0 and there
    are ≥ 2 frames (the lowest-scored free train frame if train keeps ≥ 1, else the
    highest-scored free test frame).
    """
    scores = {i: split_score(frames[i].info["frame_id"], merge_cfg.seed) for i in free}
    for i in free:
        frames[i].info["split"] = rule_split(scores[i], merge_cfg)

    def members(split: str) -> list[int]:
        return [i for i in free if frames[i].info["split"] == split]

    def count(split: str) -> int:
        return sum(1 for a in frames if a.info["split"] == split)

    def key(i: int) -> tuple[float, str]:
        return scores[i], frames[i].info["frame_id"]

    if frames and count("train") == 0:
        donors = members("test") + members("valid")
        if donors:
            frames[max(donors, key=key)].info["split"] = "train"
    if merge_cfg.valid_fraction > 0 and len(frames) >= 2 and count("valid") == 0:
        train = members("train") if count("train") >= 2 else []
        if train:
            frames[min(train, key=key)].info["split"] = "valid"
        elif members("test"):
            frames[max(members("test"), key=key)].info["split"] = "valid"


def split_frames(frames: Sequence[Atoms], where: str = "dataset") -> dict[str, list[Atoms]]:
    """Frames grouped by their ``split`` info (keys train, valid, test, always present); a
    frame without a valid split is an error naming `where` (e.g. the file) and the frame."""
    out: dict[str, list[Atoms]] = {s: [] for s in SPLITS}
    for i, atoms in enumerate(frames):
        split = atoms.info.get("split")
        if split not in out:
            raise FrameError(
                f"{where}: frame {i} (frame_id {atoms.info.get('frame_id', '?')}): info 'split' is "
                f"{split!r}, expected one of {', '.join(SPLITS)}"
            )
        out[split].append(atoms)
    return out


# ---------------------------------------------------------------------------- info
def _normalize_info(atoms: Atoms, where: str) -> None:
    """Numpy scalars → Python; None/"" provenance → omitted; type-check provenance keys."""
    info = atoms.info
    for k, v in list(info.items()):
        if isinstance(v, np.bool_):
            info[k] = bool(v)
        elif isinstance(v, np.integer):
            info[k] = int(v)
        elif isinstance(v, np.floating):
            info[k] = float(v)
    for k in (*STR_KEYS, *INT_KEYS, *FLOAT_KEYS):
        if k in info and (info[k] is None or info[k] == ""):
            del info[k]
    for k in STR_KEYS:
        if k in info and not isinstance(info[k], str):
            raise FrameError(
                f"{where}: info '{k}' must be a string, got {type(info[k]).__name__} "
                f"{info[k]!r} (a number-like string written to extxyz unprotected reads back "
                "as a number)"
            )
    for k in INT_KEYS:
        if k in info and (isinstance(info[k], bool) or not isinstance(info[k], numbers.Integral)):
            raise FrameError(f"{where}: info '{k}' must be an integer, got {info[k]!r}")
    for k in FLOAT_KEYS:
        v = info.get(k)
        if k in info and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            raise FrameError(f"{where}: info '{k}' must be a number, got {v!r}")


def coerce_str_info(atoms: Atoms) -> None:
    """Provenance strings a plain extxyz writer let turn into numbers, back to str.

    ASE writes "000123" bare and reads it back as the int 123 (leading zeros are lost):
    a file eip-al wrote, then rewritten by plain `ase.io.write`, has such ids.
    """
    for k in STR_KEYS:
        v = atoms.info.get(k)
        if isinstance(v, numbers.Real | np.generic) and not isinstance(v, bool | np.bool_):
            atoms.info[k] = str(int(v)) if float(v).is_integer() else str(v)


def _copy_labeled(atoms: Atoms) -> Atoms:
    """A copy that keeps the labels (Atoms.copy drops the calculator)."""
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, **dict(atoms.calc.results))
    return out


def _describe(theory: TheoryFingerprint) -> str:
    parts = [f"code={theory.code}", f"method={theory.method}"]
    if theory.cutoff_ry is not None:
        parts.append(f"cutoff={theory.cutoff_ry} Ry")
    return f"{theory.key()} ({', '.join(parts)})"


# ---------------------------------------------------------------------------- load / write
def load_dataset(run: RunDir, manifest: DatasetManifest) -> list[Atoms]:
    """The frames of a dataset, after checking the file's size, sha256 and frame count.

    A file that differs from its manifest raises `integrity.IntegrityError` (one line: the
    file, the step that wrote it, how to redo that step).
    """
    path = run.abs(manifest.dataset_extxyz)
    integrity.verify(run, manifest, path.parent / ARTIFACT_NAME)
    frames = read_frames(path, require_labels=True, require_cell=False)
    if len(frames) != manifest.n_frames:
        raise DatasetIntegrityError(
            f"{path}: has {len(frames)} frames, its manifest says {manifest.n_frames}"
        )
    for i, atoms in enumerate(frames):
        where = f"{path}: frame {i}"
        _normalize_info(atoms, where)
        missing = [
            k
            for k in ("frame_id", "generation", "source", "theory", "split")
            if k not in atoms.info
        ]
        if missing:
            raise DatasetIntegrityError(f"{where}: missing provenance {missing}")
        if atoms.info["split"] not in SPLITS:
            raise DatasetIntegrityError(
                f"{where}: split {atoms.info['split']!r} not in {list(SPLITS)}"
            )
    return frames


def write_dataset(
    frames: list[Atoms],
    out_dir: Path,
    generation: int,
    theory: TheoryFingerprint,
    merge_cfg: MergeConfig,
    run: RunDir,
    parent: DatasetManifest | None = None,
    source: str | None = None,
) -> DatasetManifest:
    """Write `parent`'s frames (unchanged, split kept) + the new `frames` as one dataset.

    `source` (e.g. the user's seed file) names the new frames in errors instead of `out_dir`.

    `frames` are the NEW labelled frames (all frames of the seed when `parent` is None).
    Each new frame gets ``frame_id`` (content hash) if missing, ``generation`` =
    `generation`, ``theory`` = `theory.key()` if missing, and a ``split`` by the seeded rule
    unless it arrives with one. Duplicates (same frame_id or same content as a frame
    already in the dataset) are dropped and counted. Writes `out_dir/dataset.extxyz`
    then `out_dir/artifact.json` and returns the manifest.
    """
    if merge_cfg.valid_fraction + merge_cfg.test_fraction >= 1:
        raise ConfigError(
            f"merge.valid_fraction + merge.test_fraction must be < 1 (got "
            f"{merge_cfg.valid_fraction} + {merge_cfg.test_fraction})"
        )
    out_dir = Path(out_dir).resolve()
    if not out_dir.is_relative_to(run.root):
        raise RunDirError(
            f"{out_dir}: a dataset must be written inside the run directory {run.root}"
        )
    key = theory.key()
    notes: list[str] = []
    previous: list[Atoms] = []
    parent_rel: str | None = None
    if parent is not None:
        parent_dir = run.abs(parent.dataset_extxyz).parent.resolve()
        if parent_dir == out_dir:
            raise RunDirError(f"{out_dir}: cannot write a dataset into its parent's directory")
        parent_rel = run.rel(parent_dir / ARTIFACT_NAME)
        if parent.theory.key() != key:
            msg = (
                f"theory of the new labels {_describe(theory)} differs from the dataset's "
                f"{_describe(parent.theory)} ({parent_rel})"
            )
            if not merge_cfg.allow_theory_mismatch:
                raise TheoryMismatchError(
                    f"{out_dir}: refusing to merge: {msg}; set merge.allow_theory_mismatch "
                    "to mix levels of theory"
                )
            notes.append(f"allowed theory mismatch: {msg}")
        previous = load_dataset(run, parent)

    ids: dict[str, str] = {}  # frame_id -> content hash
    contents: set[str] = set()
    for atoms in previous:
        content = frame_id(atoms)
        ids[atoms.info["frame_id"]] = content
        contents.add(content)

    new: list[Atoms] = []
    n_dup = 0
    mixed = 0
    for i, src in enumerate(frames):
        where = f"{source}: frame {i}" if source else f"{out_dir}: new frame {i}"
        validate_frame(src, where=where, require_labels=True, require_cell=False)
        atoms = _copy_labeled(src)
        _normalize_info(atoms, where)
        content = frame_id(atoms)
        fid = atoms.info.setdefault("frame_id", content)
        where = f"{where} (frame_id {fid})"
        if atoms.info.get("source") not in sources():
            raise FrameError(
                f"{where}: info 'source' must be one of {list(sources())}, got {atoms.info.get('source')!r}"
            )
        if atoms.info.get("split", "train") not in SPLITS:
            raise FrameError(f"{where}: split {atoms.info['split']!r} not in {list(SPLITS)}")
        frame_theory = atoms.info.setdefault("theory", key)
        if frame_theory != key:
            if not merge_cfg.allow_theory_mismatch:
                raise TheoryMismatchError(
                    f"{where}: labelled at theory {frame_theory}, but this dataset's theory is "
                    f"{_describe(theory)}; set merge.allow_theory_mismatch to mix levels of theory"
                )
            mixed += 1
        if fid in ids:
            if ids[fid] != content:
                raise FrameError(
                    f"{where}: frame_id already used in this dataset by a different structure"
                )
            n_dup += 1
            continue
        if content in contents:
            n_dup += 1
            continue
        ids[fid] = content
        contents.add(content)
        atoms.info["generation"] = generation
        new.append(atoms)
    if mixed:
        notes.append(
            f"allowed theory mismatch: {mixed} new frame(s) carry a theory other than {key}"
        )

    out = previous + new
    free = [len(previous) + j for j, a in enumerate(new) if "split" not in a.info]
    _assign_splits(out, free, merge_cfg)

    counts = {
        "counts_by_source": dict(Counter(a.info["source"] for a in out)),
        "counts_by_generation": dict(Counter(str(a.info["generation"]) for a in out)),
        "split_counts": {s: sum(1 for a in out if a.info["split"] == s) for s in SPLITS},
        "counts_by_theory": dict(Counter(a.info["theory"] for a in out)),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / ARTIFACT_NAME
    dataset_path = out_dir / DATASET_NAME
    # Invalidate first: from here until the new manifest lands, the directory has no valid
    # manifest, so a crash can never pair an old manifest with a new dataset file.
    manifest_path.unlink(missing_ok=True)
    write_frames(dataset_path, out)
    digest = integrity.file_digest(dataset_path)
    manifest = DatasetManifest(
        generation=generation,
        dataset_extxyz=run.rel(dataset_path),
        n_frames=len(out),
        theory=theory,
        sha256=digest.sha256,
        files={run.rel(dataset_path): digest},
        n_duplicates_dropped=n_dup,
        parent=parent_rel,
        notes=notes,
        **counts,
    )
    manifest.write(manifest_path)
    return manifest


# ---------------------------------------------------------------------------- merge
def _read_labeled(run: RunDir, result: LabelingResult, label_artifact: Path) -> list[Atoms]:
    """The labelled frames of a LabelingResult, validated, with provenance completed.

    Values that did not read back as strings (extxyz turns "000123" into 123) are
    restored: ``job_id`` from the result's outcomes by frame_id, ``theory`` from the
    result, ``frame_id`` recomputed from the content; ``labeler`` defaults to the result's.
    """
    path = run.abs(result.labeled_extxyz)
    if result.n_ok == 0 and (not path.exists() or path.stat().st_size == 0):
        return []
    frames = read_frames(path, require_labels=True, require_cell=False)
    if len(frames) != result.n_ok:
        raise FrameError(
            f"{path}: has {len(frames)} labelled frames but {label_artifact} reports "
            f"n_ok={result.n_ok}"
        )
    job_of: dict[str, str] = {}
    for o in result.outcomes:
        if o.status == "ok":
            job_of.setdefault(o.frame_id, o.job_id)
    for i, atoms in enumerate(frames):
        info = atoms.info
        if isinstance(info.get("frame_id"), np.generic | numbers.Number):
            info["frame_id"] = frame_id(atoms)
        if isinstance(info.get("theory"), np.generic | numbers.Number):
            info["theory"] = result.theory.key()
        job = info.get("job_id")
        if job is None or isinstance(job, np.generic | numbers.Number):
            if info.get("frame_id") in job_of:
                info["job_id"] = job_of[info["frame_id"]]
            elif job is not None:
                info["job_id"] = str(job)  # best effort: leading zeros are lost
        _normalize_info(atoms, f"{path}: frame {i}")
        info.setdefault("labeler", result.labeler)
    return frames


def merge_generation(cfg: ALConfig, run: RunDir, gen: int) -> DatasetManifest:
    """Dataset of generation `gen` = `run.dataset_for(gen)` + the labels of `gen`.

    Writes ``gen-XXX/merge/dataset.extxyz`` and ``artifact.json``; the dataset generation
    `gen + 1` trains on.
    """
    parent = run.dataset_for(gen)
    label_artifact = run.artifact_path(gen, "label")
    if not label_artifact.exists():
        raise RunDirError(f"{label_artifact}: no labeling result for generation {gen}; label first")
    result = LabelingResult.load(label_artifact)
    if result.generation != gen:
        raise RunDirError(
            f"{label_artifact}: is for generation {result.generation}, expected {gen}"
        )
    frames = _read_labeled(run, result, label_artifact)
    return write_dataset(
        frames, run.step_dir(gen, "merge"), gen, result.theory, cfg.merge, run, parent=parent
    )
