"""In-memory labelled image sets (digits, Fashion-MNIST) held as one uint8 array of levels."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .base import DatasetInfo, ImageDataset, from_levels


class ArrayImageDataset(ImageDataset):
    """Images as a uint8 array (N, C, H, W) of levels ``0..levels-1`` plus int64 labels (N,).

    ``images`` and ``labels`` are the integer view of the whole split (numpy, read-only);
    ``tensors()`` returns the whole split as two tensors, for tiny-data training without a loader.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        levels: int,
        name: str,
        summary: str,
        class_names: tuple[str, ...],
        split: str,
        discrete: bool = False,
        pad: int = 0,
    ) -> None:
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be a uint8 array (N, C, H, W), got {images.dtype} {images.shape}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
        if images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be square, got {images.shape[2]}x{images.shape[3]}")
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.images, self.labels, self.levels, self.split = images, labels, levels, split
        self.name, self.summary, self.class_names = name, summary, class_names
        self.discrete, self.pad = bool(discrete), int(pad)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _padded(self, images: np.ndarray) -> Tensor:
        k = torch.from_numpy(np.array(images))
        return torch.nn.functional.pad(k, (self.pad,) * 4) if self.pad else k

    def get_levels(self, index: int) -> tuple[Tensor, int]:
        return self._padded(self.images[index]), int(self.labels[index])

    def tensors(self, discrete: bool | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The whole split as (images (N, C, H, W), {"class": labels int64 (N,)}); float in [-1, 1] unless discrete."""
        discrete = self.discrete if discrete is None else discrete
        k = self._padded(self.images)
        x = k if discrete else from_levels(k, self.levels)
        return x, {"class": torch.from_numpy(np.asarray(self.labels, dtype=np.int64))}

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            summary=self.summary,
            channels=int(self.images.shape[1]),
            size=int(self.images.shape[2]) + 2 * self.pad,
            levels=self.levels,
            num_classes=len(self.class_names),
            class_names=self.class_names,
            num_items={self.split: len(self)},
        )
