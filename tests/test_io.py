"""Frame I/O: validation errors name the file, frame and problem; ids are stable."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from conftest import WATER_DFT as DATA

from eip_al.io import FrameError, attach_labels, frame_id, read_frames, write_frames


def _water(shift=0.0):
    a = molecule("H2O")
    a.set_cell([6.0, 6.0, 6.0])
    a.pbc = True
    a.positions += 2.0 + shift
    return a


def _labelled(a):
    return attach_labels(a, -14.0, np.zeros((len(a), 3)))


def test_roundtrip_keeps_labels_and_info(tmp_path):
    a = _labelled(_water())
    a.info["source"] = "seed"
    a.info["step"] = 7
    write_frames(tmp_path / "x.extxyz", [a, _labelled(_water(0.1))])
    back = read_frames(tmp_path / "x.extxyz")
    assert len(back) == 2
    assert back[0].get_potential_energy() == pytest.approx(-14.0)
    assert back[0].info["source"] == "seed" and back[0].info["step"] == 7
    assert frame_id(back[0]) == frame_id(a)


def test_frame_id_survives_extxyz_roundtrips_and_is_sensitive(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(50):  # MD-like coordinates: full float precision, many rounding boundaries
        a = _labelled(_water())
        a.positions = rng.uniform(0, 6, size=(3, 3))
        frames.append(a)
    ids = [frame_id(a) for a in frames]
    write_frames(tmp_path / "a.extxyz", frames)
    once = read_frames(tmp_path / "a.extxyz")
    write_frames(tmp_path / "b.extxyz", once)
    twice = read_frames(tmp_path / "b.extxyz")
    assert [frame_id(a) for a in once] == ids == [frame_id(a) for a in twice]
    c = frames[0].copy()
    c.positions[0, 0] += 1e-7
    assert frame_id(c) != ids[0]


def test_strings_survive_extxyz(tmp_path):
    a = _labelled(_water())
    a.info.update(job_id="000123", walker="T", frame_id="1234e5678", note="plain-text_ok")
    write_frames(tmp_path / "s.extxyz", [a])
    back = read_frames(tmp_path / "s.extxyz")[0]
    for k in ("job_id", "walker", "frame_id", "note"):
        assert back.info[k] == a.info[k] and isinstance(back.info[k], str)
    assert a.info["job_id"] == "000123"  # the caller's frame is untouched


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: setattr(a, "calc", None), "missing energy"),
        (lambda a: a.calc.results.pop("forces"), "missing forces"),
        (lambda a: a.calc.results.__setitem__("energy", float("nan")), "energy is not finite"),
        (lambda a: a.calc.results["forces"].__setitem__((0, 0), np.inf), "forces contain NaN"),
        (lambda a: setattr(a, "pbc", False), "pbc must be True"),
    ],
)
def test_bad_frames_are_named(tmp_path, mutate, match):
    good, bad = _labelled(_water()), _labelled(_water(0.2))
    mutate(bad)
    path = tmp_path / "bad.extxyz"
    from ase.io import write

    write(path, [good, bad], format="extxyz")
    with pytest.raises(FrameError, match=rf"bad.extxyz: frame 1: {match}"):
        read_frames(path)


def test_unknown_and_disallowed_elements(tmp_path):
    a = _labelled(Atoms("OHX", positions=np.eye(3) * 1.5, cell=[5, 5, 5], pbc=True))
    with pytest.raises(FrameError, match="unknown element"):
        from eip_al.io import validate_frame

        validate_frame(a)
    b = _labelled(Atoms("OHC", positions=np.eye(3) * 1.5, cell=[5, 5, 5], pbc=True))
    with pytest.raises(FrameError, match=r"\['C'\] not in the allowed set"):
        validate_frame(b, elements=["H", "O"])


def test_unreadable_and_missing(tmp_path):
    with pytest.raises(FrameError, match="file not found"):
        read_frames(tmp_path / "none.extxyz")
    p = tmp_path / "junk.extxyz"
    p.write_text("3\nnot an extxyz header\nO 0 0\n")
    with pytest.raises(FrameError, match="junk.extxyz: frame 0: cannot read"):
        read_frames(p)


def test_real_dft_data_validates():
    frames = read_frames(DATA, elements=["H", "O"])
    assert len(frames) == 111
    assert all(len(f) == 192 for f in frames)
    assert len({frame_id(f) for f in frames}) == 111
