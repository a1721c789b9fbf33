#!/usr/bin/env bash
# Make the working tree small enough to travel to a lent GPU, and whole again afterwards.
#
# The device tool sends the working tree (tracked and untracked-not-ignored files plus the carried
# paths) only when it is at most 64 MiB. The tracked weight files alone (the shipped models under
# src/difflab/pretrained and the GPU-trained models under artifacts) are about 80 MB, and the GPU
# scripts need most of the budget for their carried data (Fashion-MNIST is 31 MB). None of the GPU
# scripts reads those weights except the ones named in SLIM_KEEP.
#
#   bash scripts/gpu/slim.sh out     # before the device call: moves the weights to $SLIM_STASH
#   bash scripts/gpu/slim.sh size    # what would travel now, in MiB (tracked + untracked-not-ignored)
#   bash scripts/gpu/slim.sh back    # after it: moves them back (git status is clean again)
#
# SLIM_KEEP: an extended regular expression of paths to leave in place, e.g.
#   SLIM_KEEP='artifacts/wavegrad-standard/' bash scripts/gpu/slim.sh out   # perf.sh continues from it
# SLIM_STASH: where the weights wait (default /tmp/difflab-slim; outside the repository).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
STASH=${SLIM_STASH:-/tmp/difflab-slim}
KEEP=${SLIM_KEEP:-}

size() {
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    if [ -f "$f" ]; then stat -c %s "$f"; fi
  done | awk '{s += $1} END {printf "%.1f MiB travel (limit 64 MiB, carried paths come on top)\n", s / 1048576}'
}

case "${1:-}" in
  out)
    moved=0
    while IFS= read -r -d '' f; do
      [ -f "$f" ] || continue
      if [ -n "$KEEP" ] && [[ "$f" =~ $KEEP ]]; then continue; fi
      mkdir -p "$STASH/$(dirname "$f")"
      mv "$f" "$STASH/$f"
      moved=$((moved + 1))
    done < <(git ls-files -z -- 'src/difflab/pretrained/*.safetensors' 'artifacts/*.safetensors')
    echo "moved $moved weight files to $STASH"
    size
    ;;
  back)
    [ -d "$STASH" ] || { echo "nothing to bring back: $STASH does not exist"; exit 0; }
    n=0
    while IFS= read -r -d '' f; do
      rel=${f#"$STASH"/}
      mkdir -p "$(dirname "$rel")"
      mv "$f" "$rel"
      n=$((n + 1))
    done < <(find "$STASH" -type f -print0)
    rm -rf "$STASH"
    echo "brought back $n weight files"
    git status --short -- src/difflab/pretrained artifacts | head -5
    ;;
  size) size ;;
  *) echo "usage: bash scripts/gpu/slim.sh out|back|size" >&2; exit 2 ;;
esac
