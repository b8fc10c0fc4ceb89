"""The serve policy: what a deployment run may ask for (eip_al/serving.py, no Prefect here;
the end-to-end refusal through a real Prefect server is in test_flows.py)."""

from pathlib import Path

import pytest
import yaml

from eip_al.config import ConfigError
from eip_al.serving import (
    POLICY_ENV,
    ParameterError,
    ServePolicy,
    apply_overrides,
    resolve_served_run,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def policy(tmp_path: Path) -> ServePolicy:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "small.yaml").write_text(yaml.safe_dump({"name": "small", "generations": 3}))
    return ServePolicy.create([tmp_path / "configs"], tmp_path / "runs")


def test_preset_path_and_safe_overrides(policy: ServePolicy, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, root = resolve_served_run(policy, "small", {"generations": 1, "selection": {"n_select": 7}}, None)
    assert (cfg.generations, cfg.selection.n_select) == (1, 7)
    assert root == tmp_path / "runs" / "small"
    cfg, root = resolve_served_run(policy, "configs/small.yaml", {"name": "other"}, "runs/x")
    assert cfg.name == "other" and root == tmp_path / "runs" / "x"


@pytest.mark.parametrize(
    ("config", "overrides", "run_dir", "expect"),
    [
        ({"name": "x"}, None, None, "a deployment takes the path of a config file"),
        (str(ROOT / "configs" / "al-water.yaml"), None, None, "not a file under the config directories"),
        ("configs/../../etc/passwd", None, None, "not a file under the config directories"),
        ("small", {"labeler": {"cp2k": {"launcher": ["bash", "-c", "id"]}}}, None,
         "overrides labeler.cp2k.launcher: not allowed"),
        ("small", {"labeler.cp2k.executable": "sh"}, None, "overrides labeler.cp2k.executable: not allowed"),
        ("small", {"labeler.cp2k.template": "/etc/x.inp"}, None, "not allowed"),
        ("small", {"labeler.cp2k.user_input": "/tmp/deck.inp"}, None, "not allowed"),
        ("small", {"run_dir": "/tmp/elsewhere"}, None, "overrides run_dir: not allowed"),
        ("small", ["generations"], None, "overrides: expected a mapping"),
        ("small", None, "/tmp/elsewhere", "is outside the runs root"),
        ("small", None, "runs/../../x", "is outside the runs root"),
        ("small", {"generations": 0}, None, "generations: must be > 0"),
    ],
)
def test_refused_parameters(policy, tmp_path, monkeypatch, config, overrides, run_dir, expect) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as exc:  # ParameterError, or the config's own error
        resolve_served_run(policy, config, overrides, run_dir)
    assert expect in str(exc.value)
    assert not (tmp_path / "runs").exists()


def test_policy_goes_through_the_environment_and_fails_closed(policy, monkeypatch) -> None:
    monkeypatch.delenv(POLICY_ENV, raising=False)
    with pytest.raises(ParameterError, match="no serve policy"):
        ServePolicy.from_env()
    monkeypatch.setenv(POLICY_ENV, policy.to_env())
    assert ServePolicy.from_env() == policy


def test_overrides_are_validated_as_config(policy, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = resolve_served_run(policy, "small", None, None)[0]
    with pytest.raises(ConfigError, match=r"with overrides .*selection\.n_select: Input should be a valid integer"):
        apply_overrides(cfg, {"selection.n_select": "many"}, "small")
