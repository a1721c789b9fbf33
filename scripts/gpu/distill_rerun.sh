#!/usr/bin/env bash
# Second, short GPU run for the distillation benchmark (after scripts/gpu/all.sh): the fixed-w
# Fashion-MNIST students again (the first run compounded w at every halving, a bug since fixed) and
# diffusers' DPM-Solver++ rows (the first run stopped at diffusers' 1-step IndexError).
#   OUT=/tmp/out bash scripts/gpu/distill_rerun.sh
set -u
OUT=${OUT:?set OUT}
W=$OUT/work
mkdir -p "$W"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 DIFFLAB_FASHION_MNIST=$PWD/data-cache/fashion-mnist OMP_NUM_THREADS=2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=$PYTHONPATH:/tmp/site
B=benchmarks/distillation.py
T=data-cache/teachers/fashion-mnist-cfg
UPD=${UPD:-500}
LIMIT=${LIMIT:-170}
( timeout $LIMIT python3 $B run --students-only --teacher $T --out "$W/fmnist-distilled" --from-steps 256 --updates $UPD \
    --guidance 1.5 --device cuda --no-progress --write "$W/distillation-fmnist-students.json" > "$W/fmnist-students.log" 2>&1 ) &
( timeout $LIMIT python3 $B run --teacher-only --methods diffusers-dpmpp2m --teacher $T --out "$W/x" --from-steps 256 \
    --guidance 1.5 --device cuda --no-progress --write "$W/distillation-fmnist-diffusers.json" > "$W/fmnist-diffusers.log" 2>&1 ) &
( timeout $LIMIT python3 $B run --teacher-only --methods diffusers-dpmpp2m --teacher data-cache/teachers/digits \
    --out "$W/y" --from-steps 256 --device cuda --no-progress --write "$W/distillation-digits-diffusers.json" \
    > "$W/digits-diffusers.log" 2>&1 ) &
wait
cd "$W" && tar czf "$OUT/distill2.tgz" ./*.json ./*.log fmnist-distilled/distill.json fmnist-distilled/steps-0004/checkpoint \
  fmnist-distilled/steps-0004/config.yaml 2>/dev/null
tail -n 3 "$W"/*.log
