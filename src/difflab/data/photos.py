"""Random crops of real photographs that ship inside scikit-image and scikit-learn (no download).

Train photos (``TRAIN_PHOTOS``): skimage.data astronaut, camera, chelsea, coins, rocket,
hubble_deep_field, immunohistochemistry, moon, motorcycle (left view of stereo_motorcycle),
brick, grass, gravel, and sklearn's ``china.jpg``. Test photos (``TEST_PHOTOS``, held out):
skimage.data coffee and sklearn's ``flower.jpg``. Greyscale photos are repeated to 3 channels
for ``channels=3``; colour photos become luminance (0.299 R + 0.587 G + 0.114 B) for ``channels=1``.

An epoch has a fixed ``length``. Item i is a ``size`` x ``size`` crop of photo ``label`` at a
position drawn, with the photo (uniformly over photos) and an optional horizontal flip, from a
``torch.Generator`` seeded by ``seed`` and the epoch (``set_epoch``): the same seed and epoch give
the same crops in any order and in any DataLoader worker. The test split always uses epoch 0.
``scale`` < 1 first shrinks every photo (area-antialiased) so a crop covers more of the scene.

``LowResPairs`` turns any image dataset into (high-res, low-res) pairs for super-resolution.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .base import DatasetInfo, ImageDataset

TRAIN_PHOTOS = (
    "astronaut", "camera", "chelsea", "coins", "rocket", "hubble_deep_field", "immunohistochemistry", "moon",
    "motorcycle", "brick", "grass", "gravel", "china",
)  # fmt: skip
TEST_PHOTOS = ("coffee", "flower")
SUMMARY = "random crops of real photographs from scikit-image and scikit-learn"


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def _sklearn(filename: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return load_sample_image(filename)


PHOTO_SOURCES: dict[str, Callable[[], np.ndarray]] = {
    **{n: functools.partial(_skimage, n) for n in TRAIN_PHOTOS + TEST_PHOTOS if n not in ("china", "flower")},
    "china": functools.partial(_sklearn, "china.jpg"),
    "flower": functools.partial(_sklearn, "flower.jpg"),
}


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """Photo ``name`` as a read-only uint8 array (H, W, 3) (greyscale repeated); cached per process."""
    if name not in PHOTO_SOURCES:
        raise ValueError(f"unknown photo {name!r}; valid photos: {', '.join(sorted(PHOTO_SOURCES))}")
    try:
        arr = np.asarray(PHOTO_SOURCES[name]())
    except ImportError as e:
        raise ImportError(f"photo {name!r} needs scikit-image and scikit-learn: pip install {e.name}") from e
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    arr = np.ascontiguousarray(arr[:, :, :3], dtype=np.uint8)
    arr.setflags(write=False)
    return arr


def _prepare(name: str, channels: int, scale: float) -> Tensor:
    """Photo as a uint8 tensor (channels, H, W), shrunk by ``scale`` with area averaging."""
    x = torch.from_numpy(np.array(load_photo(name))).permute(2, 0, 1).float()
    if channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    if scale != 1.0:
        h, w = x.shape[1:]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return x.round().clamp(0, 255).to(torch.uint8)


class PhotoCrops(ImageDataset):
    """Fixed-length epochs of deterministic random crops (C, size, size) from real photos; label = photo index.

    Options: ``size`` (crop side, default 64), ``length`` (items per epoch; default 10,000 train,
    1,000 test), ``seed``, ``channels`` (3 or 1), ``scale`` (shrink photos first, in (0, 1]),
    ``flip`` (random horizontal flips), ``photos`` (names overriding the split's photo list),
    ``discrete`` (uint8 levels).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        size: int = 64,
        length: int | None = None,
        seed: int = 0,
        channels: int = 3,
        scale: float = 1.0,
        flip: bool = False,
        photos: Sequence[str] | None = None,
        discrete: bool = False,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; valid splits: train, test")
        length = (10_000 if split == "train" else 1_000) if length is None else length
        if size < 1 or length < 1 or channels not in (1, 3) or not 0.0 < scale <= 1.0:
            raise ValueError(
                f"need size >= 1, length >= 1, channels 1 or 3, 0 < scale <= 1; "
                f"got size={size}, length={length}, channels={channels}, scale={scale}"
            )
        self.split, self.size, self.length, self.seed = split, int(size), int(length), int(seed)
        self.channels, self.scale, self.flip, self.discrete = channels, float(scale), bool(flip), bool(discrete)
        self.levels = 256
        self.photo_names = tuple(photos) if photos is not None else (TRAIN_PHOTOS if split == "train" else TEST_PHOTOS)
        if not self.photo_names:
            raise ValueError("photos must name at least one photo")
        self.photos = [_prepare(n, channels, self.scale) for n in self.photo_names]
        shapes = {n: tuple(p.shape[1:]) for n, p in zip(self.photo_names, self.photos, strict=True)}
        small = [(n, hw) for n, hw in shapes.items() if min(hw) < size]
        if small:
            raise ValueError(f"crop size {size} exceeds photo(s) {small} at scale {scale}: lower size or raise scale")
        self.epoch = 0
        self._draw()

    def set_epoch(self, epoch: int) -> None:
        """Draw the crops of ``epoch`` (train split only; the test split keeps its fixed crops)."""
        if self.split == "train" and epoch != self.epoch:
            self.epoch = int(epoch)
            self._draw()

    def _draw(self) -> None:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = self.length
        self.which = torch.randint(0, len(self.photos), (n,), generator=g)
        room = torch.tensor([[p.shape[1] - self.size + 1, p.shape[2] - self.size + 1] for p in self.photos])
        u = torch.rand(n, 2, generator=g, dtype=torch.float64)
        self.corners = (u * room[self.which]).floor().long()
        self.flips = (torch.rand(n, generator=g) < 0.5) & self.flip

    def __len__(self) -> int:
        return self.length

    def get_levels(self, index: int) -> tuple[Tensor, int]:
        p = int(self.which[index])
        top, left = (int(v) for v in self.corners[index])
        k = self.photos[p][:, top : top + self.size, left : left + self.size].clone()
        if bool(self.flips[index]):
            k = k.flip(-1)
        return k, p

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name="photo-crops",
            summary=SUMMARY,
            channels=self.channels,
            size=self.size,
            levels=256,
            num_classes=len(self.photo_names),
            class_names=self.photo_names,
            num_items={self.split: self.length},
        )


def downsample(x: Tensor, factor: int, mode: str = "area") -> Tensor:
    """Shrink images (C, H, W) or (N, C, H, W) by an integer ``factor``.

    ``mode="area"`` averages each ``factor`` x ``factor`` block (exact box filter, the usual
    super-resolution degradation); ``mode="bicubic"`` is antialiased bicubic
    (``F.interpolate(..., antialias=True)``, like Pillow's resize). H and W must divide by ``factor``.
    """
    if factor < 1 or x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"factor must be >= 1 and divide the image size {tuple(x.shape[-2:])}, got {factor}")
    if mode not in ("area", "bicubic"):
        raise ValueError(f"unknown mode {mode!r}; valid modes: area, bicubic")
    batched = x if x.ndim == 4 else x[None]
    size = (x.shape[-2] // factor, x.shape[-1] // factor)
    kw = {"antialias": True, "align_corners": False} if mode == "bicubic" else {}
    out = F.interpolate(batched.float(), size=size, mode=mode, **kw)
    return out if x.ndim == 4 else out[0]


def resize_images(images: Tensor, size: Sequence[int]) -> Tensor:
    """Images (N, C, H, W) at ``size`` (H, W): area-averaged (:func:`downsample`) when an integer
    factor shrinks both sides, else antialiased bilinear interpolation."""
    h, w = images.shape[-2:]
    size = tuple(int(v) for v in size)
    if (h, w) == size:
        return images
    if h % size[0] == 0 and w % size[1] == 0 and h // size[0] == w // size[1]:
        return downsample(images, h // size[0])
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


class Rescaled(Dataset[tuple[Tensor, dict]]):
    """Wrap an image dataset for cascades: item i is ``(x, cond)``, float32 in [-1, 1].

    ``x`` is the base image shrunk by ``shrink`` (1: as it is; a base stage at lower resolution);
    ``cond`` is the base item's condition dict plus, when ``lowres_factor`` >= 1, ``"lowres"``:
    ``x`` shrunk ``lowres_factor`` times more and clamped to [-1, 1] (a super-resolution stage's
    input). Shrinking is :func:`downsample` with ``mode``. Whole in-memory splits shrink at once.
    """

    def __init__(self, base: Dataset, shrink: int = 1, lowres_factor: int = 0, mode: str = "area") -> None:
        if getattr(base, "discrete", False):
            raise ValueError("rescaling needs a dataset of float images: build it with discrete=False")
        self.base, self.shrink, self.factor, self.mode = base, int(shrink), int(lowres_factor), mode
        self.cond_keys = (*getattr(base, "cond_keys", ()), *(("lowres",) if self.factor >= 1 else ()))
        if hasattr(base, "tensors"):
            self.tensors = self._tensors

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def _rescale(self, x: Tensor, cond: dict) -> tuple[Tensor, dict]:
        x = downsample(x, self.shrink, self.mode) if self.shrink > 1 else x
        if self.factor >= 1:
            cond = {**cond, "lowres": downsample(x, self.factor, self.mode).clamp(-1.0, 1.0)}
        return x, cond

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        return self._rescale(*self.base[index])

    def _tensors(self) -> tuple[Tensor, dict]:
        return self._rescale(*self.base.tensors())  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:  # info, levels, class_names ... of the base
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


class LowResPairs(Rescaled):
    """(high-res, {"lowres": high-res shrunk by ``factor``, ...}) pairs for super-resolution."""

    def __init__(self, base: Dataset, factor: int = 4, mode: str = "area") -> None:
        super().__init__(base, 1, factor, mode)


def photo_crop_pairs(split: str = "train", factor: int = 4, mode: str = "area", **options: object) -> LowResPairs:
    """(high-res crop, low-res crop) pairs for super-resolution: ``LowResPairs(PhotoCrops(split, **options))``."""
    return LowResPairs(PhotoCrops(split, **options), factor=factor, mode=mode)  # type: ignore[arg-type]
