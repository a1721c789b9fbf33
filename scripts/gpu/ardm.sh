#!/usr/bin/env bash
# ARDMs on a lent GPU (issue 5): trains the Fashion-MNIST OA-ARDM (U-Net 5.7M parameters, logistic
# mixture head; ~180 s) and Upscale ARDMs with branching 4 and 2 (~70 s each), evaluates each (test NLL in
# bpd, per-step losses, DP vs uniform parallel budgets) and leaves in $OUT/ardm-fmnist/:
#   oa/   format.json config.yaml model.safetensors (EMA, bf16, ~11.5 MB) ardm_steps.json eval.json
#         metrics.jsonl train.json
#   up4/, up2/   eval.json metrics.jsonl train.json (no weights: the 16 MB limit)
# Wall time about 7.5 minutes (ARDM_TRAIN_SECONDS=300 of training; evaluations stop at ARDM_TOTAL_SECONDS=440).
#
#   OUT=/tmp/out bash scripts/gpu/ardm.sh            # from the repo root, Fashion-MNIST in data-cache/fashion-mnist
#   DRY=1 OUT=/tmp/ardm-dry bash scripts/gpu/ardm.sh  # here, on the CPU, tiny settings (about 3 minutes)
# With constriction importable (a cp312 wheel in .whl/), it then runs benchmarks/ardm.py on the GPU for
# whatever time is left (-> $OUT/ardm-fmnist/ardm-codec.json); without it, run the benchmark on the CPU.
# Settings: ARDM_TRAIN_SECONDS, ARDM_TOTAL_SECONDS, ARDM_INIT (weights the OA-ARDM starts from, e.g.
# artifacts/ardm-fmnist-ft), ARDM_MODELS (e.g. "oa": train only those), ARDM_LR, ARDM_FINAL_LR_RATIO,
# ARDM_WARMUP (learning rate for fine-tuning), ARDM_DATA (Fashion-MNIST folder), ARDM_RUNS (scratch), PYTHON.
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export ARDM_DATA=${ARDM_DATA:-${DIFFLAB_FASHION_MNIST:-$PWD/data-cache/fashion-mnist}}
# optional: with a constriction wheel carried in .whl/, the codec benchmark also runs here (all D steps)
if ! "$PY" -c "import constriction" 2>/dev/null && ls .whl/constriction-*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/ardm-site .whl/constriction-*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/ardm-site || true
fi
mkdir -p "$OUT/ardm-fmnist"
"$PY" scripts/gpu/ardm_run.py 2>&1 | tee "$OUT/ardm-fmnist/log.txt"
