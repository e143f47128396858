#!/usr/bin/env bash
# The GPU check of issue #11, for a machine with one CUDA GPU (under 8 minutes in all):
#   1. the test suite's CUDA-marked tests (pytest -m cuda);
#   2. Atari training throughput with --device cuda: the Atari preset (8 envs x 128 steps,
#      4 epochs x 4 minibatches, the CNN trunk shared by actor and critic) eager, then with
#      --compile (the fused update, shared trunk included), then --compile with
#      --precision bfloat16 (the CNN in mixed precision), then eager with 64 envs (the GPU's
#      share of the work grows with the batch).
# Each part has its own time limit; a part that fails or runs out of time is reported and the
# next one still runs. Results: the summary.json of each run (its "sps" is env steps per
# second of the whole run, construction and compilation included) and a log, under $OUT.
# Usage: bash benchmarks/gpu_check.sh   (PY=path/to/python, OUT=dir to override)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-/tmp/ppokit_gpu_check}
mkdir -p "$OUT"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/gpu_check.log"; }

log "machine: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  log "CUDA is not available to $PY: nothing to check"; exit 1
fi
"$PY" -c "import ale_py" 2>/dev/null || "$PY" -m pip install -q "ale-py>=0.11" opencv-python-headless

log "1. CUDA-marked tests"
timeout 120 "$PY" -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 | tail -15 | tee -a "$OUT/gpu_check.log"
log "   exit status ${PIPESTATUS[0]}"

train() {  # name, time limit (s), extra arguments...
  local name=$1 limit=$2; shift 2
  log "2. $name: ppokit train --env ALE/Breakout-v5 --device cuda $*"
  timeout "$limit" "$PY" -c "import sys; from ppokit.train.cli import main; sys.exit(main())" train --env ALE/Breakout-v5 --device cuda \
    --eval-episodes 0 --no-progress --overwrite --run-dir "$OUT/$name" "$@" \
    >"$OUT/$name.log" 2>&1
  local code=$?
  if [ -f "$OUT/$name/summary.json" ]; then
    log "   $name: $("$PY" -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"{s['env_steps']} steps in {s['wall_seconds']} s: {s['sps']} SPS ({s['update_step']} update)\")" "$OUT/$name/summary.json")"
  else
    log "   $name: no summary (exit $code); last lines:"; tail -5 "$OUT/$name.log" | tee -a "$OUT/gpu_check.log"
  fi
}
train eager 70 --total-steps 98304
train compile 110 --total-steps 196608 --compile
train compile_bf16 110 --total-steps 196608 --compile --precision bfloat16
train eager_64envs 60 --total-steps 262144 --num-envs 64
log "done: $OUT"
