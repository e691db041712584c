#!/usr/bin/env bash
# One lent-GPU call that does everything issue 3 needs measured, each step under its own time limit so that the
# whole call ends inside the device's 10-minute command limit, with every log under $OUT:
#   1. environment facts (and which JPEG decoder the worker chooses here); 2. the fp16 GPU oracle, eager; 3. the
#   hardware JPEG decode test (nvImageCodec; skipped, with its reason, where the GPU has no engine); 4. the benchmark
#   (MegaDetector defaults/best, worker, worker variants, ceiling, and with DECODE_COMPARE=1, the default, the worker
#   with --hw-decode on and off) -> bench/results/*.json; 5. the GPU oracle with --compile (slowest; last).
# The wheels in .whl/ must include nvidia-nvimgcodec-cu13 and nvidia-nvjpeg (requirements/worker.txt) for step 3 and
# the decode comparison; without them the worker reports "decode": "nvjpeg-cuda" and why.
# Default step limits (120 + 30 + 280 + 140 s) sum to 570 s, as before the decode step took 30 s of the bench's 310.
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
STEP_ORACLE_S="${STEP_ORACLE_S:-120}" STEP_BENCH_S="${STEP_BENCH_S:-280}" STEP_COMPILED_S="${STEP_COMPILED_S:-140}"
STEP_HWDECODE_S="${STEP_HWDECODE_S:-30}" DECODE_COMPARE="${DECODE_COMPARE:-1}"
# Optional (0 = skipped; the default steps already fill the command limit): shard start-up, CLI against the resident
# worker cold and warm (bench/shard_startup.py; issue 14's <= 2 s on a warm node). E.g. STEP_STARTUP_S=90 with
# STEP_COMPILED_S=50 in a session whose compiled oracle already passed.
STEP_STARTUP_S="${STEP_STARTUP_S:-0}"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu --format=csv; nproc
  python3 -c 'import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__, torchvision.__version__)'
  python3 -c 'from gpu_batch.worker import hwdecode as h; s = h.select_decoder("cuda", "auto")
print("jpeg decoder:", s.choice.decoder, "-", s.choice.reason)'
} 2>&1 | tee "$OUT/env.txt"
t0=$SECONDS
timeout "$STEP_ORACLE_S" python3 -m pytest -p no:cacheprovider gpu_batch/tests/test_oracle.py -q -k "gpu and eager" \
  2>&1 | tee "$OUT/oracle_eager.log"; echo "oracle eager rc=${PIPESTATUS[0]} after $((SECONDS - t0)) s"
t0=$SECONDS
timeout "$STEP_HWDECODE_S" python3 -m pytest -p no:cacheprovider gpu_batch/tests/test_hwdecode.py -q -rs \
  -k gpu_decode_batch 2>&1 | tee "$OUT/hwdecode.log"; echo "hwdecode rc=${PIPESTATUS[0]} after $((SECONDS - t0)) s"
compare=(); [ "$DECODE_COMPARE" = 1 ] && compare=(--decode-compare)
t0=$SECONDS
timeout "$STEP_BENCH_S" python3 bench/worker_throughput.py --workdir /tmp/bench "${compare[@]}" "$@" 2>&1 \
  | tee "$OUT/bench.log"
echo "bench rc=${PIPESTATUS[0]} after $((SECONDS - t0)) s"
cp $(ls -t bench/results/*.json | head -2) "$OUT/" 2>/dev/null
if [ "$STEP_STARTUP_S" -gt 0 ]; then
  t0=$SECONDS
  timeout "$STEP_STARTUP_S" python3 bench/shard_startup.py --device cuda --arch yolov5x6 --runs 2 2>&1 \
    | tee "$OUT/startup.log"; echo "startup rc=${PIPESTATUS[0]} after $((SECONDS - t0)) s"
fi
t0=$SECONDS
timeout "$STEP_COMPILED_S" python3 -m pytest -p no:cacheprovider gpu_batch/tests/test_oracle.py -q \
  -k "gpu and compiled" 2>&1 | tee "$OUT/oracle_compiled.log"
echo "oracle compiled rc=${PIPESTATUS[0]} after $((SECONDS - t0)) s"
