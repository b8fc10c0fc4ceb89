#!/usr/bin/env bash
# One-command set-up of a fresh Debian/Ubuntu machine for eip-al (run as root or with sudo).
# Installs CP2K, Slurm and munge from the distribution (Slurm only serves the local test
# cluster, scripts/slurm/), the CPU build of PyTorch (pinned; a plain `torch` would pull
# a multi-GB CUDA build), then eip-al with its dev, dask and xtb (tblite) extras.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
missing=()
command -v cp2k.psmp >/dev/null 2>&1 || missing+=(cp2k)
command -v slurmctld >/dev/null 2>&1 || missing+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || missing+=(munge)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q "${missing[@]}"
fi
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[dev,dask,xtb]"
echo "eip-al set up: $(command -v eip-al)"
