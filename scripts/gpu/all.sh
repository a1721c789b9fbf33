#!/usr/bin/env bash
# One prepared run on a lent GPU machine (torch with CUDA there; nothing installed from the project):
# gpu-check, the Fashion-MNIST distillation benchmark, the digits parameterization ablation, the
# w-as-input student, and the ARDM / WaveGrad trainings when their scripts exist, all in parallel,
# each under its own time limit. Results come back as a few archives in $OUT.
#
# Carry (device tool): data-cache/fashion-mnist data-cache/teachers .whl data-cache/speech-train.npz
#   OUT=/tmp/out bash scripts/gpu/all.sh                 # on the GPU machine
#   DRY=1 OUT=/tmp/gpu-dry bash scripts/gpu/all.sh       # here, on the CPU, tiny settings, to test it
set -u
OUT=${OUT:?set OUT}
W=$OUT/work
mkdir -p "$W"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 DIFFLAB_FASHION_MNIST=$PWD/data-cache/fashion-mnist
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
PY=${PY:-python3}
LIMIT=${LIMIT:-500}
if [ "${DRY:-0}" = 1 ]; then
  DEV=cpu; FROM=8; UPD=2; N=64; TSTEPS=4; FM_UPD=2; LIMIT=300
else
  DEV=cuda; FROM=256; UPD=${UPD:-300}; N=1000; TSTEPS=${TSTEPS:-2000}; FM_UPD=${FM_UPD:-1000}
fi
FM_W=${FM_W:-1.5}
export OMP_NUM_THREADS=1  # a dozen processes share 16 cores
[ "${DRY:-0}" != 1 ] && . scripts/gpu/mps.sh  # MPS: the processes' kernels run side by side
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$W/nvidia-smi.txt" 2>&1
date -u +%FT%TZ > "$W/started.txt"

job() {  # job NAME SECONDS COMMAND...: run in the background with a time limit and a log
  local name=$1 secs=$2; shift 2
  ( timeout "$secs" "$@" > "$W/$name.log" 2>&1; echo "exit $?" >> "$W/$name.log" ) &
}

if [ "${DRY:-0}" = 1 ]; then
  job gpu-check 60 echo "no GPU in a dry run"
else
  job gpu-check 200 $PY scripts/gpu_check.py --out "$W/gpu-check"
fi
B=benchmarks/distillation.py
T=data-cache/teachers/fashion-mnist-cfg
job fmnist-students "$LIMIT" $PY $B run --students-only --teacher $T --out "$W/fmnist-distilled" --from-steps $FROM \
  --updates $FM_UPD --guidance "$FM_W" --n $N --device $DEV --no-progress --write "$W/distillation-fmnist-students.json"
job fmnist-teacher "$LIMIT" $PY $B run --teacher-only --teacher $T --out "$W/fmnist-distilled" --from-steps $FROM \
  --guidance "$FM_W" --n $N --device $DEV --no-progress --write "$W/distillation-fmnist-teacher.json"
for p in eps x v both; do
  job ablation-$p "$LIMIT" $PY $B ablation --out "$W/ablation" --from-steps $FROM --updates $UPD \
    --teacher-steps $TSTEPS --parameterizations $p --n $N --device $DEV --no-progress \
    --write "$W/distillation-ablation-$p.json"
done
job digits-students "$LIMIT" $PY $B run --students-only --teacher data-cache/teachers/digits --out "$W/digits-distilled" \
  --from-steps $FROM --updates $FM_UPD --n $N --device $DEV --no-progress --write "$W/distillation-digits-students.json"
job digits-teacher "$LIMIT" $PY $B run --teacher-only --teacher data-cache/teachers/digits --out "$W/digits-distilled" \
  --from-steps $FROM --n $N --device $DEV --no-progress --write "$W/distillation-digits-teacher.json"
job wcond "$LIMIT" $PY $B wcond --teacher $T --out "$W/fmnist-wcond" --from-steps $FROM --to-steps 4 \
  --updates $((UPD * 2)) --n $N --device $DEV --no-progress --write "$W/distillation-wcond.json"
for s in ardm wavegrad; do
  if [ -f scripts/gpu/$s.sh ]; then
    mkdir -p "$W/$s"
    job "$s" "$LIMIT" env OUT="$W/$s" DRY="${DRY:-0}" bash scripts/gpu/$s.sh
  fi
done
wait
date -u +%FT%TZ > "$W/finished.txt"
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && (echo quit | nvidia-cuda-mps-control)

# what comes back: at most 8 files of 16 MiB
cd "$W"
tar czf "$OUT/distill.tgz" ./*.json ./*.log ./*.txt gpu-check/gpu_check.json \
  fmnist-distilled/distill.json fmnist-distilled/steps-0004/checkpoint fmnist-distilled/steps-0004/config.yaml \
  fmnist-distilled/steps-0001/checkpoint/format.json 2>/dev/null
for s in ardm wavegrad; do
  [ -d "$s" ] && tar czf "$OUT/$s.tgz" "$s" 2>/dev/null
done
ls -la "$OUT"
cat "$W"/*.log | tail -n 60
