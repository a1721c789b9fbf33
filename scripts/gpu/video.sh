#!/usr/bin/env bash
# Video diffusion on a lent GPU (issue 16): trains the three stages of benchmarks/video.py (0, 4 and 8
# image frames appended per 16-frame clip) side by side under MPS for VIDEO_MINUTES each (equal compute),
# bf16 autocast, 32 clips per batch; then runs `benchmarks/video.py eval` on the GPU. What comes back, in
# $OUT: video-runs.tgz (each run's config, metrics, summary and EMA weights; no optimizer state),
# video.json (docs/results/video.json), video-extension.png, logs.
#
# Carry (device tool): data-cache/fashion-mnist data-cache/digits.npz, made here first with
#   python -c "from difflab.data.digits import save_digits_copy; save_digits_copy('data-cache/digits.npz')"
# and, since the tracked weights put the tree over the device's 64 MiB, `bash scripts/gpu/slim.sh out` before
# the call (`bash scripts/gpu/slim.sh back` after it).
#   OUT=/tmp/out bash scripts/gpu/video.sh                 # on the GPU machine, from the repo root
#   DRY=1 OUT=/tmp/video-dry bash scripts/gpu/video.sh     # here, on the CPU, tiny settings, to test it
# Runs already in VIDEO_RUNS with their full checkpoint resume (benchmarks/video.py train adds --resume); the
# weights that come back (EMA only) can start new runs through train.init in VIDEO_OPTIONS.
set -u
OUT=${OUT:?set OUT}
W=$OUT/work
mkdir -p "$W"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
[ -d data-cache/fashion-mnist ] && export DIFFLAB_FASHION_MNIST=$PWD/data-cache/fashion-mnist
[ -f data-cache/digits.npz ] && export DIFFLAB_DIGITS=$PWD/data-cache/digits.npz
RUNS=${VIDEO_RUNS:-runs/video-gpu}
if [ "${DRY:-0}" = 1 ]; then
  MIN=0.5; DEV=cpu; N=2; STEPS=2
  TRAIN=(train.device=cpu data.batch_size=2 model.channels=8 data.options.n=64)
else
  MIN=${VIDEO_MINUTES:-6}; DEV=cuda; N=${VIDEO_N:-64}; STEPS=${VIDEO_STEPS:-50}
  TRAIN=(train.device=cuda train.precision=bf16 data.batch_size=32 data.num_workers=4 train.lr=1e-3 ${VIDEO_OPTIONS:-})
  export OMP_NUM_THREADS=2
  . scripts/gpu/mps.sh
fi
date -u +%FT%TZ > "$W/started.txt"
$PY benchmarks/video.py train --runs "$RUNS" --minutes "$MIN" --train-options "${TRAIN[@]}" > "$W/train.log" 2>&1
echo "train exit $?" >> "$W/train.log"
$PY benchmarks/video.py eval --runs "$RUNS" --n "$N" --steps "$STEPS" --device "$DEV" > "$W/eval.log" 2>&1
echo "eval exit $?" >> "$W/eval.log"
date -u +%FT%TZ > "$W/finished.txt"
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && (echo quit | nvidia-cuda-mps-control)
cp docs/results/video.json "$OUT/" 2>/dev/null
cp docs/images/video-extension.png "$OUT/" 2>/dev/null
tar czf "$OUT/video-runs.tgz" --exclude='*/checkpoint/state.pt' --exclude='*/checkpoint/model.safetensors' \
  --exclude='*/tb' "$RUNS" 2>/dev/null
cp "$W"/*.log "$W"/*.txt "$OUT/" 2>/dev/null
ls -la "$OUT"
tail -n 30 "$W/train.log" "$W/eval.log"
