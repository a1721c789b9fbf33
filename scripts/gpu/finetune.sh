#!/usr/bin/env bash
# One prepared run on a lent GPU (issues 5 and 6): continue the committed models with an annealed
# learning rate, side by side on one GPU (MPS), plus `make gpu-check`:
#   - the Fashion-MNIST OA-ARDM from artifacts/ardm-fmnist-ft (cosine from ARDM_LR to 2%, batch 256),
#     then its test NLL, per-step losses and parallel table on the test images carried (scripts/gpu/ardm.sh);
#   - both WaveGrad runs from artifacts/wavegrad-{standard,priorgrad} for the same minutes (cosine from
#     5e-4 to 2%, the step count fitted to the time), then the 6-step schedule search (scripts/gpu/wavegrad.sh).
# Results come back as $OUT/ardm.tgz, $OUT/wavegrad.tgz, $OUT/check.tgz (about 25 MB in all).
#
# Carry (device tool): data-cache/speech-train.npz and a Fashion-MNIST folder (FMNIST, default
# data-cache/fashion-mnist). The working tree travels too, so the carry must stay under 64 MiB with it:
#   OUT=/tmp/out bash scripts/gpu/finetune.sh                       # on the GPU machine (about 8 minutes)
#   DRY=1 OUT=/tmp/ft-dry PY=.venv/bin/python bash scripts/gpu/finetune.sh   # here, tiny, on the CPU
# Settings: MINUTES (training minutes of each run, 6.3), ARDM_LR (2.5e-4), WAVEGRAD_BATCH (128), FMNIST.
set -u
OUT=${OUT:?set OUT}
PY=${PY:-python3}
W=$OUT/work
mkdir -p "$W"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
MINUTES=${MINUTES:-6.3}
FMNIST=${FMNIST:-data-cache/fashion-mnist}
if [ "${DRY:-0}" = 1 ]; then MINUTES=0.3; fi
[ "${DRY:-0}" != 1 ] && . scripts/gpu/mps.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$W/nvidia-smi.txt" 2>&1
date -u +%FT%TZ > "$W/started.txt"
SECS=$(awk "BEGIN {print int($MINUTES * 60)}")

job() {  # job NAME SECONDS COMMAND...: in the background, with a time limit and a log
  local name=$1 secs=$2; shift 2
  ( timeout "$secs" "$@" > "$W/$name.log" 2>&1; echo "exit $?" >> "$W/$name.log" ) &
}
if [ "${DRY:-0}" = 1 ]; then
  job gpu-check 10 echo "no GPU in a dry run"
else
  job gpu-check 240 $PY scripts/gpu_check.py --steps 200 --n 500 --out "$W/gpu-check"
fi
job ardm $((SECS + 150)) env OUT="$W/ardm" DRY="${DRY:-0}" PYTHON="$PY" ARDM_DATA="$PWD/$FMNIST" ARDM_MODELS=oa \
  ARDM_INIT=artifacts/ardm-fmnist-ft ARDM_LR="${ARDM_LR:-2.5e-4}" ARDM_FINAL_LR_RATIO=0.02 ARDM_WARMUP=100 \
  ARDM_TRAIN_SECONDS="$SECS" ARDM_TOTAL_SECONDS=$((SECS + 60)) bash scripts/gpu/ardm.sh
job wavegrad $((SECS + 150)) env OUT="$W/wavegrad" DRY="${DRY:-0}" PY="$PY" WAVEGRAD_MINUTES="$MINUTES" WAVEGRAD_FIT=1 \
  WAVEGRAD_INIT_PREFIX=artifacts/wavegrad- WAVEGRAD_BATCH="${WAVEGRAD_BATCH:-$([ "${DRY:-0}" = 1 ] && echo 4 || echo 128)}" \
  WAVEGRAD_SNAPSHOTS="$([ "${DRY:-0}" = 1 ] && echo 5 || echo 360,420,480,540,600,660)" WAVEGRAD_SNAPSHOT_WEIGHTS="" \
  WAVEGRAD_EXTRA="train.lr=5e-4 train.warmup=50 train.decay=cosine train.final_lr_ratio=0.02" \
  bash scripts/gpu/wavegrad.sh
# (snapshot times count the training seconds recorded with the init weights: 300 s for the committed ones)
wait
date -u +%FT%TZ > "$W/finished.txt"
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && (echo quit | nvidia-cuda-mps-control)

# what comes back: at most 8 files of 16 MiB
cd "$W"
tar czf "$OUT/ardm.tgz" ardm 2>/dev/null
tar czf "$OUT/wavegrad.tgz" wavegrad 2>/dev/null
tar czf "$OUT/check.tgz" ./*.log ./*.txt gpu-check/gpu_check.json 2>/dev/null
ls -la "$OUT"
tail -n 5 "$W"/*.log "$W"/wavegrad/wavegrad-*.log
