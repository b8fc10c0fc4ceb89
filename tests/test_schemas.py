"""Artifacts: JSON round-trip, strictness, versioning, JSON Schema export."""

import json

import pytest

from eip_al.schemas import (
    ARTIFACT_TYPES,
    SCHEMA_VERSION,
    DatasetManifest,
    GenerationRecord,
    StepRecord,
    TheoryFingerprint,
    json_schemas,
)


def _manifest(**kw):
    base = dict(
        generation=0,
        dataset_extxyz="gen-000/merge/dataset.extxyz",
        n_frames=3,
        counts_by_source={"seed": 2, "md": 1},
        counts_by_generation={"-1": 2, "0": 1},
        split_counts={"train": 2, "valid": 1, "test": 0},
        theory=TheoryFingerprint(code="mock", method="q-SPC/Fw"),
        sha256="ab" * 32,
    )
    base.update(kw)
    return DatasetManifest(**base)


def test_roundtrip(tmp_path):
    m = _manifest()
    path = m.write(tmp_path / "a" / "artifact.json")
    again = DatasetManifest.load(path)
    assert again == m
    rec = GenerationRecord(generation=1, steps=[StepRecord(step="train", status="done", wall_time_s=1.5)])
    assert GenerationRecord.load(rec.write(tmp_path / "g.json")) == rec


def test_extra_fields_forbidden(tmp_path):
    p = _manifest().write(tmp_path / "m.json")
    data = json.loads(p.read_text())
    data["surprise"] = 1
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="surprise"):
        DatasetManifest.load(p)


def test_version_mismatch_and_corrupt(tmp_path):
    p = _manifest().write(tmp_path / "m.json")
    data = json.loads(p.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="schema_version"):
        DatasetManifest.load(p)
    p.write_text('{"schema_version": 1, "generation": ')
    with pytest.raises(ValueError, match="cannot read"):
        DatasetManifest.load(p)


def test_theory_key_is_stable_and_sensitive():
    a = TheoryFingerprint(code="cp2k", method="PBE-D3", cutoff_ry=400)
    b = TheoryFingerprint(code="cp2k", method="PBE-D3", cutoff_ry=400)
    c = TheoryFingerprint(code="cp2k", method="PBE-D3", cutoff_ry=500)
    assert a.key() == b.key() != c.key()


def test_json_schema_export_covers_all():
    schemas = json_schemas()
    assert set(schemas) == {cls.__name__ for cls in ARTIFACT_TYPES}
    for sch in schemas.values():
        assert sch["additionalProperties"] is False
        assert "schema_version" in sch["properties"]
