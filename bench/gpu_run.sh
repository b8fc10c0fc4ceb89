#!/usr/bin/env bash
# One-shot GPU benchmarks (issue 23) for a session that has a GPU: at most 8 minutes (the
# step limits below add up to 480 s), so a 15-minute device budget leaves room for one retry.
#
#   bash bench/gpu_run.sh            # from the repository root, on the GPU machine
#
# Runs, each under its own time limit so one hang cannot eat the device budget:
#   1. bench_model.py  --device cuda --batch 8   one model pass, plain vs eIP vs UDD, 1 and 8 boxes
#   2. bench_explore.py --device cuda            full MD / UDD walker steps, 288 atoms, vs the
#                                                authors' 35.4 ms per UDD step on an H100
#   3. bench_explore.py --device cuda --compile  the same with the backbone compiled (explore.compile)
#   4. bench_explore.py --device cuda --replicas 1 4 8   ASE engine one by one and batched vs
#                                                the device engine (explore.engine device)
#   5. bench_train.py --device cuda --epochs 12   s/epoch and valid force MAE of the default
#                                                model on the DFT water, batch 4 vs 16 × amp off vs bf16
#                                                (writes after every run: a timeout keeps the finished ones;
#                                                needs the DFT water in ../shared or, where that is absent,
#                                                a copy in bench/data/water-dft/, gitignored: carry it)
# Results: bench/results/{model,explore,explore-replicas,train}-cuda.json (copied to $OUT when the
# device tool sets it). Then, on the development machine: python bench/summarize.py.
# Prepare first (bench/gpu_prepare.sh): the GPU image lacks ase, vesin(-torch), pydantic and
# greenlet and reaches no registry, so their wheels travel in bench/wheels/ and are installed
# here into a scratch folder (the image's own packages stay untouched).
set -u
cd "$(dirname "$0")"
DEPS=$(mktemp -d)
if ls wheels/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target "$DEPS" wheels/*.whl || exit 1
fi
export PYTHONPATH="..:$DEPS"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
status=0
run() {  # run LIMIT_S CMD...: one benchmark, failures reported, never fatal to the rest
    local limit=$1; shift
    echo "== $*"
    timeout "$limit" "$@" || { echo "!! failed or timed out (rc $?): $*"; status=1; }
}
run 60 python3 bench_model.py --device cuda --batch 8 --threads 1 --repeats 30
run 80 python3 bench_explore.py --device cuda --threads 1 --steps 200 --rounds 3
run 100 python3 bench_explore.py --device cuda --threads 1 --steps 200 --rounds 3 --compile --suffix=-compiled
run 150 python3 bench_explore.py --device cuda --threads 1 --replicas 1 4 8 --atoms 288 \
    --steps 100 --rounds 2 --note "one GPU, not shared; 1 CPU thread for the host side"
run 90 python3 bench_train.py --device cuda --threads 1 --epochs 12
if [ -n "${OUT:-}" ]; then cp results/*-cuda*.json "$OUT"/ 2>/dev/null || true; fi
exit $status
