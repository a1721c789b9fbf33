#!/usr/bin/env bash
# Issue 20 (performance round) on a lent GPU, in one call of about 10 minutes; the jobs run side by side
# under MPS and each leaves its results in $OUT:
#   - throughput: difflab's and diffusers' U-Net training at matched parameters, bf16, batch $TP_BATCH, with
#     and without torch.compile (benchmarks/training.py throughput --device cuda): $OUT/training.json, whose
#     "throughput" rows merge into docs/results/training.json (copy the file over; the CPU rows are kept).
#     Needs diffusers: carry its wheel in .whl/ (pip download diffusers --no-deps -d .whl).
#   - WaveGrad on four voices: continues $WAVEGRAD_INIT (default artifacts/wavegrad-standard, the GPU-trained English model) on
#     data-cache/speech-voices.npz for WAVEGRAD_MINUTES, searches its 6-step schedule, then distils that
#     schedule to 3 steps for DISTILL_MINUTES (difflab wavegrad-distill): $OUT/wavegrad.tgz with both runs
#     (bf16 EMA weights only). Then, on the CPU here: benchmarks/wavegrad.py --runs ... --speakers en heldout-ru.
#
# Carry (device tool): data-cache/speech-voices.npz (scripts/gpu/make_speech_cache.py --voices en es fr it
# --max-minutes 14 --out data-cache/speech-voices.npz; about 44 MB) and .whl/. The tracked weights put the
# tree over the device's 64 MiB: first `SLIM_KEEP=artifacts/wavegrad-standard/ bash scripts/gpu/slim.sh out`
# (about 13 MiB left, so 9 + 4 + 44 + the wheel fit), and `bash scripts/gpu/slim.sh back` after the call.
#   OUT=/tmp/out bash scripts/gpu/perf.sh                                # on the GPU machine
#   DRY=1 OUT=/tmp/perf-dry PY=.venv/bin/python bash scripts/gpu/perf.sh  # here, tiny settings, on the CPU
# Settings: WAVEGRAD_MINUTES (6), DISTILL_MINUTES (2.5), WAVEGRAD_INIT, TP_BATCH (256), PY.
set -u
OUT=${OUT:?set OUT}
PY=${PY:-python3}
W=$OUT/work
mkdir -p "$W"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && ! "$PY" -c "import diffusers" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
CACHE=${WAVEGRAD_CACHE:-data-cache/speech-voices.npz}
INIT=${WAVEGRAD_INIT:-artifacts/wavegrad-standard}
if [ "${DRY:-0}" = 1 ]; then
  DEV=cpu; PREC=fp32; WMIN=0.2; DMIN=0.2; BATCH=4; TP=(--batch 4 --steps 1 --no-write); SEARCH="--search 2 --clips 1 --seconds 0.5"
  DEXTRA="data.batch_size=4"
else
  [ "${DRY:-0}" != 1 ] && . scripts/gpu/mps.sh
  DEV=cuda; PREC=bf16; WMIN=${WAVEGRAD_MINUTES:-6}; DMIN=${DISTILL_MINUTES:-2.5}; BATCH=128
  TP=(--batch "${TP_BATCH:-256}" --steps 30 --compile --bf16); SEARCH="--search 6 --clips 8 --seconds 1.5"
  DEXTRA="data.batch_size=128 train.precision=bf16"
fi
test -f "$CACHE" || { echo "missing $CACHE: run scripts/gpu/make_speech_cache.py --voices en es fr it ..." >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$W/nvidia-smi.txt" 2>&1
date -u +%FT%TZ > "$W/started.txt"

job() {  # job NAME SECONDS COMMAND...: in the background, with a time limit and a log
  local name=$1 secs=$2; shift 2
  ( timeout "$secs" "$@" > "$W/$name.log" 2>&1; echo "exit $?" >> "$W/$name.log" ) &
}
job throughput 400 sh -c "$PY benchmarks/training.py throughput --device $DEV ${TP[*]} && cp docs/results/training.json $W/"
wavegrad_then_distill() {
  env OUT="$W/wavegrad" DRY="${DRY:-0}" PY="$PY" WAVEGRAD_MINUTES="$WMIN" WAVEGRAD_FIT=1 WAVEGRAD_PRIORS=standard \
    WAVEGRAD_INIT="$INIT" WAVEGRAD_CACHE="$CACHE" WAVEGRAD_BATCH="$BATCH" WAVEGRAD_SNAPSHOTS=1000000 \
    WAVEGRAD_SNAPSHOT_WEIGHTS="" WAVEGRAD_SEARCH="$SEARCH" \
    WAVEGRAD_EXTRA="train.lr=3e-4 train.warmup=50 train.decay=cosine train.final_lr_ratio=0.02" \
    bash scripts/gpu/wavegrad.sh
  local teacher="$W/wavegrad/wavegrad-standard" student="$W/wavegrad/wavegrad-3step"
  # shellcheck disable=SC2086
  "$PY" -m difflab wavegrad-distill "$teacher" --out "$student" --device "$DEV" --minutes "$DMIN" --fit-schedule \
    --no-progress $DEXTRA train.ckpt_every=100000
  rm -f "$student/checkpoint/model.safetensors" "$student/checkpoint/state.pt"
  rm -rf "$student/tb"
  [ -f "$student/checkpoint/ema.safetensors" ] && "$PY" -c "import sys, torch; from safetensors.torch import load_file, save_file
f = sys.argv[1]; save_file({k: v.to(torch.bfloat16) for k, v in load_file(f).items()}, f)" "$student/checkpoint/ema.safetensors"
}
export -f wavegrad_then_distill
export W PY DRY="${DRY:-0}" WMIN DMIN INIT CACHE BATCH SEARCH DEV DEXTRA
job wavegrad "$(awk "BEGIN {print int(($WMIN + $DMIN) * 60 + 300)}")" bash -c wavegrad_then_distill
wait
date -u +%FT%TZ > "$W/finished.txt"
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && (echo quit | nvidia-cuda-mps-control)

# what comes back: at most 8 files of 16 MiB
cd "$W"
tar czf "$OUT/wavegrad.tgz" wavegrad 2>/dev/null
tar czf "$OUT/perf.tgz" ./*.log ./*.txt training.json 2>/dev/null
ls -la "$OUT"
tail -n 5 "$W"/*.log
