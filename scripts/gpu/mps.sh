# Sourced by the GPU scripts (scripts/gpu/all.sh, finetune.sh): many small processes share one GPU;
# with the MPS daemon their kernels run side by side instead of time-sliced. Started only if a CUDA op
# works through it; otherwise stopped, and the scripts go on without. Needs PY (python) and W (log folder).
# Stop it at the end with: [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && (echo quit | nvidia-cuda-mps-control)
if command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p /tmp/mps-pipe /tmp/mps-log
  if nvidia-cuda-mps-control -d && timeout 60 "${PY:-python3}" -c "import torch; print(torch.ones(4, device='cuda').sum().item())"; then
    echo "MPS on" > "$W/mps.txt"
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    echo "MPS off" > "$W/mps.txt"
  fi
fi
