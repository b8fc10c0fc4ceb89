"""Templates are package data: found with importlib.resources, in the checkout and in an
installed wheel outside it (the slow test builds one and exports a CP2K job there)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eip_al.label.backends.slurm import SLURM_TEMPLATE
from eip_al.label.base import packaged_template, template_path

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_templates_are_the_package_data() -> None:
    for rel in ("cp2k/water-pbe-d3.inp", "slurm/array.sh"):
        shipped = packaged_template(*rel.split("/"))
        assert shipped.is_file() and shipped.is_relative_to(ROOT / "eip_al")
        assert (ROOT / "templates" / rel).resolve() == shipped.resolve()
    assert SLURM_TEMPLATE == packaged_template("slurm", "array.sh")


def test_relative_template_path_falls_back_to_the_package(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # not the checkout: templates/ is not here
    assert template_path("templates/cp2k/water-pbe-d3.inp") == packaged_template("cp2k", "water-pbe-d3.inp")
    mine = tmp_path / "templates" / "cp2k" / "water-pbe-d3.inp"
    mine.parent.mkdir(parents=True)
    mine.write_text("&GLOBAL\n&END GLOBAL\n")
    assert template_path("templates/cp2k/water-pbe-d3.inp") == Path("templates/cp2k/water-pbe-d3.inp")  # user's own
    assert template_path("elsewhere/x.inp") == Path("elsewhere/x.inp")  # not found: the caller says so


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.mark.slow
def test_installed_wheel_exports_a_cp2k_job_outside_the_checkout(tmp_path: Path) -> None:
    """Build the wheel from a copy of the checkout, install it (no deps: the system's) into a
    fresh venv, and run `eip-al label --labeler cp2k --backend export` in a directory that
    has no templates/: the CP2K deck and the Slurm template come from the installed package."""
    from eip_al.io import write_frames
    from eip_al.systems import build_water_box

    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
        ".hypothesis", ".venv", "data"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
          str(tmp_path / "dist"), str(src)], tmp_path, env)
    wheel = next((tmp_path / "dist").glob("eip_al-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path, env)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], tmp_path, env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([str(venv / "bin" / "python"), "-c",
                  "import eip_al.label.backends.slurm as b; print(b.__file__); print(b.SLURM_TEMPLATE.is_file())"],
                 work, env).stdout.split()
    assert Path(where[0]).is_relative_to(venv) and where[1] == "True", where
    write_frames(work / "in.extxyz", [build_water_box(4, seed=s) for s in range(2)])
    (work / "config.yaml").write_text(
        "name: wheel\nlabeler:\n  kind: cp2k\n  backend: export\n"
        "  cp2k: {executable: cp2k-not-installed-here}\n")  # export: the bundled schema validates
    _run([str(venv / "bin" / "eip-al"), "label", "in.extxyz", "out.extxyz", "--config", "config.yaml",
          "--work-dir", "jobs"], work, env)
    decks = sorted((work / "jobs").rglob("*.inp"))
    assert len(decks) == 2 and all("&FORCE_EVAL" in d.read_text().upper() for d in decks), decks
