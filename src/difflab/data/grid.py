"""Image grids: the sample sheets the trainer and the samplers write as PNG."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def make_grid(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile images (N, C, H, W) in [-1, 1] into a uint8 array (rows*(H+p)+p, cols*(W+p)+p, C).

    ``nrow`` images per row (``cols = min(nrow, N)``, ``rows = ceil(N / cols)``); ``padding`` pixels
    of ``pad_value`` (in [-1, 1]; 1 = white) around and between the tiles. C must be 1 or 3;
    values outside [-1, 1] are clamped and non-finite values become 0 (grey).
    """
    x = torch.as_tensor(images).detach().to("cpu", torch.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] < 1:
        raise ValueError(f"images must have shape (N, C, H, W) with N >= 1 and C in (1, 3), got {tuple(x.shape)}")
    if nrow < 1 or padding < 0:
        raise ValueError(f"need nrow >= 1 and padding >= 0, got nrow={nrow}, padding={padding}")
    n, c, h, w = x.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    pix = ((x.nan_to_num(0.0, 0.0, 0.0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    fill = round((min(max(pad_value, -1.0), 1.0) + 1) * 127.5)
    grid = torch.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), fill, dtype=torch.uint8)
    for i in range(n):
        top, left = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        grid[:, top : top + h, left : left + w] = pix[i]
    return grid.permute(1, 2, 0).numpy()


def save_grid(
    images: Tensor, path: str | os.PathLike[str], nrow: int = 8, padding: int = 2, pad_value: float = 1.0
) -> Path:
    """Write ``make_grid(images, nrow, padding, pad_value)`` to ``path`` as PNG (atomically); return the path."""
    from PIL import Image

    arr = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
