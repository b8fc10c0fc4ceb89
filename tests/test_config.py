"""Config loading: valid files load, malformed ones name the file and the field."""

import re
from pathlib import Path

import pytest
import yaml

from eip_al.config import ALConfig, ConfigError, config_from_mapping, dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["al-water.yaml", "al-water-demo.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / name)
    assert isinstance(cfg, ALConfig)


def test_paper_config_matches_paper():
    cfg = load_config(ROOT / "configs" / "al-water.yaml")
    assert cfg.system.n_molecules == 96
    assert cfg.seed_data.n_frames == 1000
    assert cfg.selection.n_select == 1000
    assert cfg.labeler.kind == "cp2k"
    assert {w.kind for w in cfg.explore.walkers} == {"md", "udd"}
    assert all(w.temperature_K == 300 for w in cfg.explore.walkers)


def test_demo_config_uses_mock():
    cfg = load_config(ROOT / "configs" / "al-water-demo.yaml")
    assert cfg.labeler.kind == "mock"


def _write(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


def test_bad_value_names_file_and_field(tmp_path):
    p = _write(tmp_path, "selection:\n  n_select: 0\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert "selection.n_select: must be > 0" in msg


def test_unknown_field_is_an_error(tmp_path):
    p = _write(tmp_path, "train:\n  epocs: 10\n")
    with pytest.raises(ConfigError, match=r"train\.epocs: unknown field"):
        load_config(p)


def test_wrong_type_and_literal(tmp_path):
    p = _write(tmp_path, "labeler:\n  kind: vasp\n")
    with pytest.raises(ConfigError, match=r"labeler\.kind"):
        load_config(p)


def test_cross_field_rule(tmp_path):
    p = _write(tmp_path, "selection:\n  lo: 2.0\n  hi: 1.0\n")
    with pytest.raises(ConfigError, match=r"selection: lo \(2.0\) must be below hi"):
        load_config(p)


def test_random_selection_method(tmp_path):
    assert load_config(_write(tmp_path, "selection:\n  method: random\n")).selection.method == "random"
    with pytest.raises(ConfigError, match="cannot be combined with diversity"):
        load_config(_write(tmp_path, "selection:\n  method: random\n  diversity: fps\n"))


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "a: [1, 2\n"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))


def test_dump_roundtrip():
    cfg = config_from_mapping({"name": "x", "generations": 5, "train": {"epochs": 3}})
    import yaml

    again = config_from_mapping(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def _doc_yaml_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")]):
        for k, text in enumerate(re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.S)):
            blocks.append((f"{path.name}#{k}", text))
    return blocks


@pytest.mark.parametrize(("where", "text"), _doc_yaml_blocks(), ids=[w for w, _ in _doc_yaml_blocks()])
def test_config_examples_in_the_docs_are_valid(where: str, text: str) -> None:
    """Every ```yaml block of README.md and docs/ is a (partial) run config that loads:
    renamed or removed fields make the docs fail here, not the user's run."""
    config_from_mapping(yaml.safe_load(text))


def test_empty_config_file_is_refused(tmp_path):
    """An empty file must not silently start the defaults (the paper's 96-water CP2K run)."""
    for text in ("", "# only a comment\n", "{}\n", "null\n"):
        with pytest.raises(ConfigError, match=r"bad\.yaml: the config is empty; .* at least `name`"):
            load_config(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("model:\n  cutoff: .inf\n", r"model\.cutoff: must be a finite number \(got inf\)"),
        ("train:\n  lr: .nan\n", r"train\.lr: must be a finite number"),
        ("selection:\n  hi: .inf\n", r"selection\.hi: must be a finite number"),
        ("report:\n  bond_range_A: [0.8, .inf]\n", r"report\.bond_range_A\.1: must be a finite"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path, text, expect):
    with pytest.raises(ConfigError, match=expect):
        load_config(_write(tmp_path, text))


def test_valid_and_test_fractions_leave_training_data(tmp_path):
    p = _write(tmp_path, "merge:\n  valid_fraction: 0.6\n  test_fraction: 0.4\n")
    with pytest.raises(ConfigError, match=r"merge: valid_fraction \+ test_fraction must be below 1"):
        load_config(p)
    config_from_mapping({"merge": {"valid_fraction": 0.5, "test_fraction": 0.4}})


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"run_dir": "runs/x\ntouch /tmp/pwned"}, "run_dir"),
        ({"system": {"kind": "file", "structure_file": "a\rb.cif"}}, "system.structure_file"),
        ({"seed_data": {"source": "file", "file": "seed\x00.extxyz"}}, "seed_data.file"),
        ({"labeler": {"cp2k": {"template": "t\n.inp"}}}, "labeler.cp2k.template"),
        ({"labeler": {"cp2k": {"user_input": "my\tdeck.inp"}}}, "labeler.cp2k.user_input"),
        ({"labeler": {"cp2k": {"executable": "cp2k\nid"}}}, "labeler.cp2k.executable"),
        ({"labeler": {"cp2k": {"launcher": ["srun", "-n\n2"]}}}, "labeler.cp2k.launcher.1"),
        ({"labeler": {"slurm": {"account": "a\nb"}}}, "labeler.slurm.account"),
    ],
)
def test_control_characters_in_paths_and_commands_are_refused(data, field):
    with pytest.raises(ConfigError) as exc:
        config_from_mapping(data, "x.yaml")
    msg = str(exc.value)
    assert msg.startswith(f"x.yaml: {field}: must not contain a newline or other control character")
    assert "\n" not in msg  # one line: the bad value is shown escaped


def test_paths_with_spaces_are_fine():
    cfg = config_from_mapping({"run_dir": "runs/my run", "labeler": {"cp2k": {"template": "a b.inp"}}})
    assert cfg.run_dir == Path("runs/my run")
