#!/usr/bin/env bash
# One lent-GPU call that does everything issue 3 needs measured, each step under its own time limit so that the
# whole call ends inside the device's 10-minute command limit, with every log under $OUT:
#   1. environment facts; 2. the fp16 GPU oracle, eager; 3. the benchmark (MegaDetector defaults/best, worker,
#   worker variants, ceiling) -> bench/results/*.json; 4. the GPU oracle with --compile (slowest; last).
# Usage (on the device machine, repo root, wheels carried in .whl/ as in the device README):
#   bash bench/gpu_session.sh [extra bench/worker_throughput.py arguments]
set -uo pipefail
OUT="${OUT:-/tmp/gpu-session-out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 YOLO_CONFIG_DIR=/tmp/yolo-config
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
STEP_ORACLE_S="${STEP_ORACLE_S:-120}" STEP_BENCH_S="${STEP_BENCH_S:-310}" STEP_COMPILED_S="${STEP_COMPILED_S:-140}"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu --format=csv; nproc
  python3 -c 'import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__, torchvision.__version__)'
} 2>&1 | tee "$OUT/env.txt"
t0=$SECONDS
timeout "$STEP_ORACLE_S" python3 -m pytest -p no:cacheprovider gpu_batch/tests/test_oracle.py -q -k "gpu and eager" \
  2>&1 | tee "$OUT/oracle_eager.log"; echo "oracle eager rc=${PIPESTATUS[0]} after $((SECONDS - t0)) s"
t0=$SECONDS
timeout "$STEP_BENCH_S" python3 bench/worker_throughput.py --workdir /tmp/bench "$@" 2>&1 | tee "$OUT/bench.log"
echo "bench rc=${PIPESTATUS[0]} after $((SECONDS - t0)) s"
cp $(ls -t bench/results/*.json | head -2) "$OUT/" 2>/dev/null
t0=$SECONDS
timeout "$STEP_COMPILED_S" python3 -m pytest -p no:cacheprovider gpu_batch/tests/test_oracle.py -q \
  -k "gpu and compiled" 2>&1 | tee "$OUT/oracle_compiled.log"
echo "oracle compiled rc=${PIPESTATUS[0]} after $((SECONDS - t0)) s"
