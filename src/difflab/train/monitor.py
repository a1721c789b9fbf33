"""What a run shows while it trains: metrics.jsonl, TensorBoard scalars and images, a progress bar.

Only the main process (rank 0) writes. TensorBoard needs the ``tensorboard`` package; without
it the run goes on with a single warning. On resume, lines of ``metrics.jsonl`` beyond the
checkpoint's step (written after the last checkpoint by the interrupted run) are dropped, so the
file describes one consistent history.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only the lines of a metrics.jsonl with ``step <= step`` (atomic rewrite)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if int(rec.get("step", 0)) <= step:
            keep.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def _clean(v: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the file stays parseable."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class Monitor:
    """Writes metrics (JSON lines + TensorBoard) and drives the tqdm progress bar."""

    def __init__(
        self, run_dir: Path, *, enabled: bool, start_step: int, total_steps: int, progress: bool, tensorboard: bool
    ) -> None:
        self.enabled = enabled
        self.metrics_path = run_dir / "metrics.jsonl"
        self.writer = None
        self.bar = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(self.metrics_path, start_step)
        self._file = self.metrics_path.open("a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "TensorBoard logs are off: pip install tensorboard (metrics.jsonl is still written)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1 if start_step else None)
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total_steps, initial=start_step, unit="step", desc="train", dynamic_ncols=True, file=sys.stderr
            )

    def log(self, record: dict[str, Any]) -> None:
        """Append one record (must contain ``step``) to metrics.jsonl and TensorBoard."""
        if not self.enabled:
            return
        self._file.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._file.flush()
        if self.writer is not None:
            step = int(record["step"])
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"train/{k}", v, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}", refresh=False)

    def image(self, tag: str, grid: Any, step: int) -> None:
        """Add an (H, W, C) uint8 image to TensorBoard."""
        if self.writer is not None:
            self.writer.add_image(tag, grid, step, dataformats="HWC")

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def write(self, message: str) -> None:
        """Print a line to stdout without breaking the progress bar (main process only)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self._file.close()
