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
echo "eip-al set up: $(command -v eip-al)"
