#!/usr/bin/env bash
# Prepare bench/gpu_run.sh on the development machine (PyPI reachable; the GPU machine reaches
# nothing): the wheels that the GPU image (Python 3.12, its own torch, numpy, pandas, scipy,
# matplotlib, rich, pyyaml, psutil) lacks, into bench/wheels/, and the DFT water for
# bench_train.py into bench/data/water-dft/. Both folders are gitignored: carry them.
#
#   bash bench/gpu_prepare.sh
#   then, through the device tool:  run(command="bash bench/gpu_run.sh", timeout_s=540,
#                                       carry=["bench/wheels", "bench/data/water-dft"])
set -euo pipefail
cd "$(dirname "$0")"
pin() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf wheels && mkdir -p wheels data/water-dft
python3 -m pip download -q --only-binary=:all: --no-deps -d wheels --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform any \
    "ase==$(pin ase)" "vesin==$(pin vesin)" "vesin-torch==$(pin vesin-torch)" \
    "pydantic==$(pin pydantic)" "pydantic-core==$(pin pydantic-core)" \
    "annotated-types==$(pin annotated-types)" "typing-inspection==$(pin typing-inspection)" "greenlet==$(pin greenlet)"
cp ../../shared/data/water-dft/*.extxyz data/water-dft/
du -sh wheels data/water-dft
