#!/usr/bin/env bash
# Text to image (issue 15) on a lent GPU: trains the five stages of benchmarks/imagen.py (16x16 base with the
# frozen MiniLM, with the CLIP text tower, with a scratch encoder; 16 -> 64 super-resolution with and without
# noise-conditioning augmentation) side by side under MPS for IMAGEN_MINUTES each (equal compute), bf16
# autocast, IMAGEN_BATCH images per batch. The scoring runs afterwards on the CPU here:
#   for f in imagen-*.tgz; do tar xzf $f; done && python benchmarks/imagen.py eval --runs runs/imagen-gpu
# What comes back, in $OUT: imagen-RUN.tgz for each of the five runs (config, metrics, summary and EMA weights
# in bf16; no optimizer state), logs.
#
# Carry (device tool) .gpucarry, made here first with
#   .venv/bin/python scripts/gpu/make_minilm_carry.py .gpucarry/minilm.tar.xz           # 19 MiB
#   mkdir -p .gpucarry/fashion-mnist && for f in /usr/share/datasets/fashion-mnist/*.gz; do
#     zcat "$f" | xz -9 > .gpucarry/fashion-mnist/$(basename "${f%.gz}").xz; done         # 26 MiB
#   .venv/bin/python -c "from difflab.data.digits import save_digits_copy; save_digits_copy('.gpucarry/digits.npz')"
# and, as the tracked weights put the tree over the device's 64 MiB, before the call
#   SLIM_KEEP='src/difflab/pretrained/clip-scenes/text_encoder' bash scripts/gpu/slim.sh out   # then: back
# (about 9 + 8 MiB of tree; 61 MiB with the carry). The CLIP text tower is the shipped one.
#   OUT=/tmp/out bash scripts/gpu/imagen.sh                                   # on the GPU machine
#   DRY=1 OUT=/tmp/imagen-dry PYTHON=.venv/bin/python bash scripts/gpu/imagen.sh   # here, tiny, on the CPU
# Runs already in IMAGEN_RUNS resume from their checkpoints; weights that came back (EMA only) can start new
# runs through train.init in IMAGEN_OPTIONS.
set -u
OUT=${OUT:?set OUT}
W=${WORK:-/tmp/difflab-imagen-work}  # logs gathered into $OUT/logs.txt (at most 8 files come back)
mkdir -p "$W" "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
C=.gpucarry
if [ -f "$C/minilm.tar.xz" ]; then
  mkdir -p /tmp/difflab-minilm && tar xJf "$C/minilm.tar.xz" -C /tmp/difflab-minilm && export DIFFLAB_MINILM=/tmp/difflab-minilm
fi
if [ -d "$C/fashion-mnist" ]; then
  mkdir -p /tmp/difflab-fmnist
  for f in "$C"/fashion-mnist/*.xz; do xz -dc "$f" > "/tmp/difflab-fmnist/$(basename "${f%.xz}")"; done
  export DIFFLAB_FASHION_MNIST=/tmp/difflab-fmnist
fi
[ -f "$C/digits.npz" ] && export DIFFLAB_DIGITS=$PWD/$C/digits.npz
CLIP=${IMAGEN_CLIP:-src/difflab/pretrained/clip-scenes}
RUNS=${IMAGEN_RUNS:-runs/imagen-gpu}
if [ "${DRY:-0}" = 1 ]; then
  MIN=0.4
  TRAIN=(train.device=cpu data.batch_size=4 model.channels=8 data.options.n=64 train.log_every=5)
else
  MIN=${IMAGEN_MINUTES:-7}
  TRAIN=(train.device=cuda train.precision=bf16 data.batch_size=${IMAGEN_BATCH:-256} data.num_workers=2
         train.lr=1e-3 train.warmup=500 train.log_every=200 train.sample_every=0 train.ckpt_every=2000
         ${IMAGEN_OPTIONS:-})
  export OMP_NUM_THREADS=2
  . scripts/gpu/mps.sh
fi
date -u +%FT%TZ > "$W/started.txt"
$PY benchmarks/imagen.py train --runs "$RUNS" --clip "$CLIP" --minutes "$MIN" --train-options "${TRAIN[@]}" \
  > "$W/train.log" 2>&1
echo "train exit $?" >> "$W/train.log"
date -u +%FT%TZ > "$W/finished.txt"
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && (echo quit | nvidia-cuda-mps-control)
# one archive per run (at most 16 MiB a file comes back), EMA weights in bf16: the scratch encoder's embedding
# of the whole WordPiece vocabulary alone is 15.6 MB in float32
for r in "$RUNS"/*/; do
  r=${r%/}; name=$(basename "$r")
  # the shipped CLIP text tower by name, so that the run loads wherever the repository lies
  [ "$CLIP" = src/difflab/pretrained/clip-scenes ] && grep -rl --include='*.yaml' --include='*.json' "$PWD/$CLIP" "$r" \
    | xargs -r sed -i "s|$PWD/$CLIP|pretrained:clip-scenes|g"
  ema="$r/checkpoint/ema.safetensors"
  [ -f "$ema" ] && $PY -c "import sys, torch; from safetensors.torch import load_file, save_file
f = sys.argv[1]; save_file({k: v.to(torch.bfloat16) for k, v in load_file(f).items()}, f)" "$ema"
  tar czf "$OUT/imagen-$name.tgz" --exclude='*/checkpoint/state.pt' --exclude='*/checkpoint/model.safetensors' \
    --exclude='*/tb' --exclude='*/samples' "$r" 2>/dev/null
done
cat "$W"/*.txt "$W"/train.log "$RUNS"/*.log > "$OUT/logs.txt" 2>/dev/null  # at most 8 files come back
ls -la "$OUT"
tail -n 20 "$W/train.log"
