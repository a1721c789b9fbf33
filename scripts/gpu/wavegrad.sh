#!/usr/bin/env bash
# WaveGrad on a lent GPU (issue 6): trains the small config with the standard prior and with PriorGrad
# side by side for the same wall time, scores EMA snapshots on validation clips along the way,
# grid-searches the 6-step schedule on the validation split, and leaves in $OUT/wavegrad-{standard,priorgrad}/
# the run folders (checkpoint/ with format.json + config.yaml + bf16 ema.safetensors only, snapshots/,
# metrics.jsonl) and logs: about 13 MB in all (two final EMA files of 4.3 MB, one snapshot with weights).
#
#   OUT=/tmp/out bash scripts/gpu/wavegrad.sh              # from the repo root; no pip install needed
#   DRY=1 OUT=/tmp/out PY=.venv/bin/python bash scripts/gpu/wavegrad.sh    # tiny CPU smoke test (~1 min)
#
# Needs data-cache/speech-train.npz (scripts/gpu/make_speech_cache.py; 16.7 MB): train + validation
# audio as 8-bit mu-law and the mel filter bank, so neither PyAV nor librosa is needed there.
# Settings (environment): WAVEGRAD_MINUTES (training minutes per run, default 5), WAVEGRAD_DEVICE (cuda),
# WAVEGRAD_PRECISION (bf16), WAVEGRAD_BATCH (64), WAVEGRAD_SNAPSHOTS (training seconds scored on
# validation, 30,60,120,150,180,240), WAVEGRAD_SNAPSHOT_WEIGHTS (which of those keep weights: 150),
# WAVEGRAD_WEIGHTS_RUNS (runs whose snapshots keep weights: standard), WAVEGRAD_SEARCH (search arguments,
# "--search 6 --clips 8 --seconds 1.5"), WAVEGRAD_PARALLEL (1: both runs at once; 0: one after the
# other), WAVEGRAD_KEEP_STATE (1: keep fp32 model weights + optimizer state, ~35 MB a run, to resume),
# WAVEGRAD_EXTRA (more KEY=VALUE overrides), WAVEGRAD_PRIORS ("standard priorgrad": the runs to train),
# WAVEGRAD_INIT_PREFIX (continue each run from PREFIX<prior>, e.g. artifacts/wavegrad-, with that
# checkpoint's PriorGrad energy reference; WAVEGRAD_INIT=PATH continues every run from PATH), WAVEGRAD_FIT (1: --fit-schedule, the learning-rate decay ends
# when the minutes are up; give train.decay=cosine in WAVEGRAD_EXTRA), PY or PYTHON (python3).
set -uo pipefail
: "${OUT:?set OUT to the output folder}"
PY=${PYTHON:-${PY:-python3}}
if [ "${DRY:-0}" = 1 ]; then
  D_MIN=0.2; D_DEV=cpu; D_PREC=fp32; D_BATCH=4; D_SNAP=3,6; D_KEEP=6; D_SEARCH="--search 2 --clips 1 --seconds 0.5"
  D_PAR=0; D_THREADS=1
else
  D_MIN=5; D_DEV=cuda; D_PREC=bf16; D_BATCH=64; D_SNAP=30,60,120,150,180,240; D_KEEP=150
  D_SEARCH="--search 6 --clips 8 --seconds 1.5"; D_PAR=1; D_THREADS=4
fi
MINUTES=${WAVEGRAD_MINUTES:-$D_MIN}
DEVICE=${WAVEGRAD_DEVICE:-$D_DEV}
PRECISION=${WAVEGRAD_PRECISION:-$D_PREC}
BATCH=${WAVEGRAD_BATCH:-$D_BATCH}
SNAPS=${WAVEGRAD_SNAPSHOTS:-$D_SNAP}
KEEP=${WAVEGRAD_SNAPSHOT_WEIGHTS:-$D_KEEP}
WEIGHTS_RUNS=${WAVEGRAD_WEIGHTS_RUNS:-standard}
SEARCH=${WAVEGRAD_SEARCH:-$D_SEARCH}
CACHE=${WAVEGRAD_CACHE:-data-cache/speech-train.npz}
THREADS=${WAVEGRAD_THREADS:-$D_THREADS}
test -f "$CACHE" || { echo "missing $CACHE: run scripts/gpu/make_speech_cache.py first" >&2; exit 2; }
mkdir -p "$OUT"
"$PY" -c "import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__,
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" \
  > "$OUT/wavegrad-env.txt" 2>&1

train() {  # $1 = prior
  local run="$OUT/wavegrad-$1" keep="" init=() fit=()
  case ",$WEIGHTS_RUNS," in *",$1,"*) keep=$KEEP ;; esac
  if [ -n "${WAVEGRAD_INIT:-}${WAVEGRAD_INIT_PREFIX:-}" ]; then
    local from="${WAVEGRAD_INIT:-${WAVEGRAD_INIT_PREFIX:-}$1}"
    init=("train.init=$from")
    [ "$1" = priorgrad ] && init+=("model.prior_energy_ref=$("$PY" -c "import json, sys
print(json.load(open(sys.argv[1] + '/checkpoint/format.json'))['model_config']['prior_energy_ref'])" "$from")")
  fi
  [ "${WAVEGRAD_FIT:-0}" = 1 ] && fit=(--fit-schedule)
  # shellcheck disable=SC2086
  PYTHONPATH=src "$PY" -m difflab wavegrad-train configs/wavegrad-small.yaml --out "$run" --device "$DEVICE" \
    --minutes "$MINUTES" --snapshots "$SNAPS" --snapshot-weights "$keep" --no-progress $SEARCH \
    model.prior="$1" data.options.source=cache data.options.root="$CACHE" train.precision="$PRECISION" \
    data.batch_size="$BATCH" train.threads="$THREADS" train.log_every=100 train.ckpt_every=2000 \
    "${init[@]}" "${fit[@]}" ${WAVEGRAD_EXTRA:-} > "$OUT/wavegrad-$1.log" 2>&1
  echo "wavegrad-$1: exit $?" >> "$OUT/wavegrad-env.txt"
  if [ "${WAVEGRAD_KEEP_STATE:-0}" != 1 ] && [ -f "$run/checkpoint/ema.safetensors" ]; then
    rm -f "$run/checkpoint/model.safetensors" "$run/checkpoint/state.pt"
    "$PY" -c "import sys, torch; from safetensors.torch import load_file, save_file
f = sys.argv[1]; save_file({k: v.to(torch.bfloat16) for k, v in load_file(f).items()}, f)" \
      "$run/checkpoint/ema.safetensors"
  fi
  rm -rf "$run/tb"
}

start=$(date +%s)
PRIORS=${WAVEGRAD_PRIORS:-standard priorgrad}
for prior in $PRIORS; do
  if [ "${WAVEGRAD_PARALLEL:-$D_PAR}" = 1 ]; then train "$prior" & else train "$prior"; fi
done
wait
echo "wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/wavegrad-env.txt"
du -sh "$OUT" >> "$OUT/wavegrad-env.txt"
tail -n 4 "$OUT"/wavegrad-*.log
