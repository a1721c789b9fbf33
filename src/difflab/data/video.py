"""Video datasets for video diffusion (Ho et al. 2022, "Video Diffusion Models"): items ``(x, cond)``, x (C, F, H, W).

A video item is a float32 tensor (C, F, H, W) in [-1, 1] (frames on axis 1), or uint8 levels with
``discrete=True``; :func:`~difflab.data.collate` batches them to (B, C, F, H, W).

- :class:`MovingItems` ("moving-items"): grey videos of one or two real items (Fashion-MNIST
  clothes and handwritten digits, the 20 kinds of ``scenes.ITEMS``) bouncing around a black canvas;
  class-conditional, with each item's track, and reproducible per (seed, split, index).
- :class:`VideoFolder` ("video-folder"): the user's videos (files or folders of frame images), cut
  into clips.
- :class:`AppendImageFrames`: wraps a video dataset for joint image-video training (Ho et al.
  2022, section 3.3): each video gets independent single frames of other videos appended, marked
  in ``cond["frame_is_image"]`` so that a model can mask its temporal attention for them.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .base import DatasetInfo, ImageDataset, SkipCounter, from_levels
from .scenes import ITEMS, source_images

MOVING_SUMMARY = "grey videos of one or two Fashion-MNIST / digit items bouncing around a black canvas"
SPLIT_IDS = {"train": 0, "test": 1}
DEFAULT_COUNTS = {"train": 20_000, "test": 500}
ITEM_COUNTS = {"1": (1,), "2": (2,), "1-2": (1, 2)}
SPEED_RANGE = (1.0, 2.5)  # pixels per underlying frame
SPRITE = 28


def _check_split(split: str, splits: tuple[str, ...]) -> None:
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(splits)}")


@functools.lru_cache(maxsize=64)
def _shrunk_pool(item: int, source: str, root: str | None, item_size: int) -> np.ndarray:
    """Item kind ``item``'s sprites of ``source`` split area-averaged to float32 (n, s, s) in [0, 1]; cached."""
    pool = torch.from_numpy(source_images(item, source, root).astype(np.float32) * (1.0 / 255.0))
    if item_size != SPRITE:
        pool = torch.nn.functional.interpolate(pool[:, None], size=(item_size, item_size), mode="area")[:, 0]
    out = pool.numpy()
    out.setflags(write=False)
    return out


def bounce(start: np.ndarray, velocity: np.ndarray, steps: np.ndarray, limit: float) -> np.ndarray:
    """Positions (T, 2) after ``steps`` (T,) frames of constant ``velocity`` (2,) from ``start`` (2,) in [0, limit].

    A wall reflects the motion: the unfolded position ``start + velocity * t`` is folded back into
    ``[0, limit]`` (a triangle wave of period ``2 * limit``), which is where an item that bounces
    off both walls elastically is after ``t`` frames. Each position depends only on its own step.
    """
    x = np.asarray(start, np.float64)[None] + np.asarray(steps, np.float64)[:, None] * np.asarray(velocity)[None]
    if limit <= 0:
        return np.zeros_like(x)
    y = np.mod(x, 2.0 * limit)
    return np.where(y > limit, 2.0 * limit - y, y)


def _paint(canvas: np.ndarray, sprite: np.ndarray, track: np.ndarray) -> None:
    """Max-composite ``sprite`` (s, s) into ``canvas`` (F, size+1, size+1) at sub-pixel corners ``track`` (F, 2).

    Bilinear shift: the sprite is spread over the 4 integer placements around the corner with the
    bilinear weights, which keeps its mass and moves its centroid by exactly the fractional offset.
    """
    s = sprite.shape[0]
    base = np.floor(track).astype(np.int64)
    frac = (track - base).astype(np.float32)
    padded = np.zeros((s + 1, s + 1), np.float32)
    padded[:s, :s] = sprite
    right = np.roll(padded, 1, axis=1)
    down = np.roll(padded, 1, axis=0)
    both = np.roll(down, 1, axis=1)
    for f in range(len(track)):
        fy, fx = frac[f]
        patch = (1 - fy) * ((1 - fx) * padded + fx * right) + fy * ((1 - fx) * down + fx * both)
        r, c = base[f]
        region = canvas[f, r : r + s + 1, c : c + s + 1]
        np.maximum(region, patch, out=region)


class MovingItems(ImageDataset):
    """Grey videos (1, frames, size, size) of real items bouncing around a black canvas ("moving-items").

    Each video holds one or two items (``items``: "1", "2", or "1-2" for one or two with probability
    1/2 each). An item is a Fashion-MNIST photo or a handwritten digit (one of the 20 kinds
    ``scenes.ITEMS``, drawn uniformly; images from ``scenes.source_images``: the train split uses
    the train images, the test split the test images), area-averaged from 28x28 to ``item_size``.
    It starts at a uniform random top-left corner in ``[0, size - item_size]^2`` and moves with a
    constant velocity (speed uniform in [1, 2.5] pixels per underlying frame, uniform direction),
    reflected at the canvas walls so that it always stays entirely inside (see :func:`bounce`).
    Sub-pixel positions are rendered by a bilinear shift of the sprite (not rounded), so motion is
    smooth and an item's intensity centroid follows its track exactly up to 8-bit rounding. Two
    items combine by per-pixel maximum.

    Frame ``f`` shows the motion at underlying frame ``f * stride`` (``stride`` subsamples the frame
    rate; velocities stay per underlying frame). Video ``i`` is a pure function of (seed, split,
    ``i``) (``numpy.random.default_rng([seed, split id, i])``), and each frame depends only on its
    time, so the first ``k`` frames of a ``frames=128`` video equal the ``frames=k`` video: long
    test videos can score extended samples.

    Options: ``n`` (default 20,000 train / 500 test), ``frames`` (16), ``size`` (32; at least
    ``item_size + 4``), ``item_size`` (14), ``items`` ("1-2"), ``stride`` (1), ``seed`` (0),
    ``root`` (Fashion-MNIST folder, as for fashion-mnist), ``discrete`` (uint8 levels).

    ``cond``: ``"class"`` (int64 scalar: the kind of the first item, 0..19), ``"labels"`` (int64
    (2,): both items' kinds, -1 for a missing second item) and ``"tracks"`` (float32 (frames, 2, 2):
    each item's top-left corner (row, col) per frame in pixels, NaN for a missing item).
    :meth:`class_labels` gives all class labels without rendering.
    """

    cond_keys = ("class", "labels", "tracks")

    def __init__(
        self,
        split: str = "train",
        *,
        n: int | None = None,
        frames: int = 16,
        size: int = 32,
        item_size: int = 14,
        items: Literal["1", "2", "1-2"] = "1-2",
        stride: int = 1,
        seed: int = 0,
        root: str | os.PathLike[str] | None = None,
        discrete: bool = False,
    ) -> None:
        _check_split(split, self.splits)
        n = DEFAULT_COUNTS[split] if n is None else n
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if frames < 1 or stride < 1:
            raise ValueError(f"frames and stride must be >= 1, got frames={frames}, stride={stride}")
        if not 1 <= item_size <= SPRITE:
            raise ValueError(
                f"item_size must be in 1..{SPRITE} (shrunk from {SPRITE}x{SPRITE} sprites), got {item_size}"
            )
        if size < item_size + 4:
            raise ValueError(f"size must be >= item_size + 4 = {item_size + 4}, got {size}")
        if str(items) not in ITEM_COUNTS:
            raise ValueError(f"unknown items {items!r}; valid values: {', '.join(ITEM_COUNTS)}")
        self.split, self.n, self.frames, self.size = split, int(n), int(frames), int(size)
        self.item_size, self.items, self.stride, self.seed = int(item_size), str(items), int(stride), int(seed)
        self.root = None if root is None else os.fspath(root)
        self.discrete, self.levels = bool(discrete), 256
        self._class_labels: Tensor | None = None
        source_images(0, split, self.root)  # load now: a missing Fashion-MNIST fails here, not in a worker

    def __len__(self) -> int:
        return self.n

    def _draw_labels(self, rng: np.random.Generator) -> np.ndarray:
        """The first draws of a video: item count, then both kinds (int64 (2,), -1 for no second item)."""
        counts = ITEM_COUNTS[self.items]
        u = rng.random()  # always drawn, so every `items` option shares the rest of the stream
        count = counts[int(u * len(counts))]
        labels = rng.integers(len(ITEMS), size=2).astype(np.int64)
        labels[count:] = -1
        return labels

    def class_labels(self) -> Tensor:
        """int64 (n,): every video's class (its first item's kind), from the label draws only; cached."""
        if self._class_labels is None:
            sid = SPLIT_IDS[self.split]
            labels = [self._draw_labels(np.random.default_rng([self.seed, sid, i]))[0] for i in range(self.n)]
            self._class_labels = torch.tensor(labels, dtype=torch.int64)
        return self._class_labels

    def video(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        """Video ``index``: (uint8 levels (1, frames, size, size), int64 labels (2,), float32 tracks (frames, 2, 2))."""
        return self._render(index, np.arange(self.frames))

    def frame(self, index: int, f: int) -> Tensor:
        """Frame ``f`` of video ``index`` as an image (1, size, size) (float, or levels with ``discrete``).

        Equal to ``self[index][0][:, f]`` but renders only that frame (used by :class:`AppendImageFrames`).
        """
        if not 0 <= f < self.frames:
            raise IndexError(f"frame {f} out of range for videos of {self.frames} frames")
        k = self._render(index, np.array([f]))[0][:, 0]
        return k if self.discrete else from_levels(k, self.levels)

    def _render(self, index: int, frame_ids: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """(levels (1, T, size, size), labels, tracks (T, 2, 2)) at the given frames (each depends only on its time)."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for a dataset of {self.n} items")
        rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], index])
        labels = self._draw_labels(rng)
        limit = float(self.size - self.item_size)
        steps = np.asarray(frame_ids, dtype=np.int64) * self.stride
        canvas = np.zeros((len(steps), self.size + 1, self.size + 1), np.float32)
        tracks = np.full((len(steps), 2, 2), np.nan, np.float32)
        for slot in range(2):  # both slots' draws are always made, so they do not depend on the item count
            pool = _shrunk_pool(int(max(labels[slot], 0)), self.split, self.root, self.item_size)
            pick = int(rng.integers(len(pool)))
            start = rng.uniform(0.0, limit, size=2)
            speed, angle = rng.uniform(*SPEED_RANGE), rng.uniform(0.0, 2.0 * np.pi)
            if labels[slot] < 0:
                continue
            track = bounce(start, speed * np.array([np.sin(angle), np.cos(angle)]), steps, limit)
            tracks[:, slot] = track
            _paint(canvas, pool[pick], track)
        k = np.rint(np.clip(canvas[:, : self.size, : self.size], 0.0, 1.0) * 255.0).astype(np.uint8)
        return torch.from_numpy(k[None]), torch.from_numpy(labels), torch.from_numpy(tracks)

    def get_levels(self, index: int) -> tuple[Tensor, int]:
        """(uint8 levels (1, frames, size, size), class label); see :meth:`video`."""
        k, labels, _ = self.video(index)
        return k, int(labels[0])

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        n = self.n
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        k, labels, tracks = self.video(index % n)
        x = k if self.discrete else from_levels(k, self.levels)
        return x, {"class": labels[0].clone(), "labels": labels, "tracks": tracks}

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name="moving-items",
            summary=f"{MOVING_SUMMARY} ({self.split} split, {self.frames} frames, stride {self.stride})",
            channels=1,
            size=self.size,
            levels=256,
            num_classes=len(ITEMS),
            class_names=ITEMS,
            num_items={self.split: self.n},
        )


class AppendImageFrames(Dataset[tuple[Tensor, dict]]):
    """Wrap a video dataset for joint image-video training: item i gets ``count`` independent frames appended.

    Item ``i`` is the wrapped item ``(x, cond)`` with x (C, F, H, W) extended on the frame axis to
    (C, F + count, H, W) by ``count`` single frames, each a uniformly random frame of a uniformly
    random *other* item (drawn from ``numpy.random.default_rng([seed, i])``: the same frames every
    time). When the wrapped dataset has a ``class_labels()`` method (moving-items), the other items
    are drawn among those with the same class label, so a class-conditional model sees images of
    its class (the item itself when it is alone in its class). A wrapped dataset whose class has a
    ``frame(i, f)`` method and an integer ``frames`` attribute (moving-items, video-folder) gives
    just the borrowed frame; others (wrappers included) load the whole other item (same draws, same
    result). ``cond`` gains ``"frame_is_image"``,
    a bool tensor (F + count,) that is True for the appended frames; conditions with a frame axis
    (such as ``"tracks"``) still describe the F video frames only. ``count=0`` returns the items
    unchanged apart from an all-False ``"frame_is_image"``. Other attributes (``info``, ``levels``
    ...) are the wrapped dataset's.
    """

    def __init__(self, dataset: Dataset, count: int, seed: int = 0) -> None:
        if int(count) != count or count < 0:
            raise ValueError(f"count must be an integer >= 0, got {count!r}")
        self.dataset, self.count, self.seed = dataset, int(count), int(seed)
        self.cond_keys = (*getattr(dataset, "cond_keys", ()), "frame_is_image")
        n = len(dataset)  # type: ignore[arg-type]
        self._labels: np.ndarray | None = None
        self._by_label: dict[int, np.ndarray] = {}
        if self.count and callable(getattr(dataset, "class_labels", None)):
            self._labels = np.asarray(dataset.class_labels(), dtype=np.int64).reshape(-1)  # type: ignore[attr-defined]
            if len(self._labels) != n:
                raise ValueError(f"class_labels() gave {len(self._labels)} labels for a dataset of {n} items")
            for label in np.unique(self._labels):
                self._by_label[int(label)] = np.flatnonzero(self._labels == label)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _others(self, index: int) -> np.ndarray:
        """The items whose frames item ``index`` may borrow: same class (if labelled) and not itself, if any."""
        pool = self._by_label[int(self._labels[index])] if self._labels is not None else np.arange(len(self))
        rest = pool[pool != index]
        return rest if len(rest) else np.array([index])

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        index %= n
        x, cond = self.dataset[index]
        if x.ndim != 4:
            raise ValueError(f"AppendImageFrames needs video items (C, F, H, W), got shape {tuple(x.shape)}")
        if self.count:
            rng = np.random.default_rng([self.seed, index])
            pool = self._others(index)
            frames = getattr(self.dataset, "frames", None)
            # only the dataset's own class: a wrapper (Rescaled ...) forwards attributes but changes the frames
            own = callable(getattr(type(self.dataset), "frame", None)) and isinstance(frames, int)
            one_frame = self.dataset.frame if own else None  # type: ignore[attr-defined]
            extra = []
            for _ in range(self.count):
                other = int(pool[int(rng.integers(len(pool)))])
                if callable(one_frame):
                    extra.append(one_frame(other, int(rng.integers(frames)))[:, None])
                else:
                    video = self.dataset[other][0]
                    f = int(rng.integers(video.shape[1]))
                    extra.append(video[:, f : f + 1])
            x = torch.cat([x, *extra], dim=1)
        flags = torch.zeros(x.shape[1], dtype=torch.bool)
        flags[x.shape[1] - self.count :] = True
        return x, {**cond, "frame_is_image": flags}

    def __getattr__(self, name: str) -> object:  # info, levels, class_labels ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class VideoFolder(ImageDataset):
    """The user's videos under ``root`` as clips (channels, frames, size, size) in [-1, 1] ("video-folder").

    Videos: every file with a suffix in ``video_io.VIDEO_EXTENSIONS`` (.gif, .mp4, .webm, .avi, .mov,
    .mkv) anywhere under ``root``, and every folder (``root`` included) that directly holds image
    files: its images, sorted by name, are the frames of one video. Hidden files and folders are
    ignored; other files are counted in ``num_ignored``. Decoding is :func:`~difflab.data.read_video`
    (imageio with PyAV; GIFs and frame images with Pillow).

    Every video is decoded once, at construction (a progress bar shows for more than 20 videos), and
    kept in memory as uint8: this dataset is for data sets that fit in memory. Each video keeps
    every ``stride``-th frame (frame-rate subsampling), is centre-cropped to a square (a one-time
    notice says when a video is not square) and resized to ``size`` x ``size`` with Pillow (box
    filter, i.e. area averaging, when shrinking; bicubic when enlarging), in ``channels`` (1 grey or
    3 RGB; transparency composited on white, 16-bit frames scaled by their range). Items are the
    non-overlapping windows of ``frames`` consecutive kept frames of every video, in file order;
    ``cond`` is ``{}``. There is only a ``train`` split.

    Unreadable or truncated files are skipped and counted in ``skipped`` ((path, reason); one
    ``DataWarning``); videos shorter than one clip are skipped and listed in ``too_short`` ((path,
    kept frames); one notice giving the frames needed). No clip at all is a ValueError.
    Attributes: ``files`` (the videos kept), ``num_frames`` (their kept frame counts), ``clips``
    ((video index, first frame) per item).
    """

    splits = ("train",)
    cond_keys = ()

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        frames: int = 16,
        stride: int = 1,
        size: int = 32,
        channels: Literal[1, 3] = 3,
        discrete: bool = False,
        progress: bool | None = None,
    ) -> None:
        from .folder import _walk, image_extensions
        from .video_io import VIDEO_EXTENSIONS

        _check_split(split, self.splits)
        if frames < 1 or stride < 1 or size < 1:
            raise ValueError(f"frames, stride and size must be >= 1, got frames={frames}, stride={stride}, size={size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"video folder {self.root} does not exist or is not a folder")
        self.split, self.frames, self.stride, self.size = split, int(frames), int(stride), int(size)
        self.channels, self.discrete, self.levels = int(channels), bool(discrete), 256

        exts = image_extensions() - set(VIDEO_EXTENSIONS)
        sources: list[Path] = []
        frame_folders: set[Path] = set()
        self.num_ignored = 0
        for path in _walk(self.root):
            suffix = path.suffix.lower()
            if suffix in VIDEO_EXTENSIONS:
                sources.append(path)
            elif suffix in exts:
                if path.parent not in frame_folders:
                    frame_folders.add(path.parent)
                    sources.append(path.parent)
            else:
                self.num_ignored += 1

        self._skips = SkipCounter(f"video-folder {self.root}")
        self.files: list[Path] = []
        self.num_frames: list[int] = []
        self.too_short: list[tuple[str, int]] = []
        self._videos: list[Tensor] = []
        for path in self._progress(sources, progress):
            try:
                clip = self._decode(path)
            except ImportError:
                raise
            except Exception as e:  # any decoder failure means "unreadable file"
                self._skips.add(str(path), f"{type(e).__name__}: {e}")
                continue
            if clip.shape[1] < self.frames:
                self.too_short.append((str(path), int(clip.shape[1])))
                continue
            self.files.append(path)
            self.num_frames.append(int(clip.shape[1]))
            self._videos.append(clip)
        if self._skips.skipped:
            path, reason = self._skips.skipped[0]
            msg = f"skipped {len(self._skips.skipped)} unreadable video(s) (first: {path}: {reason})"
            self._skips.warn_once("decode", msg)
        if self.too_short:
            path, got = self.too_short[0]
            need = (self.frames - 1) * self.stride + 1
            msg = (
                f"skipped {len(self.too_short)} video(s) shorter than one clip: a clip needs {self.frames} frames "
                f"after stride {self.stride}, i.e. at least {need} decoded frames (first: {path}: {got} kept frames)"
            )
            self._skips.warn_once("short", msg)
        self.clips = [(v, s) for v, f in enumerate(self.num_frames) for s in range(0, f - self.frames + 1, self.frames)]
        if not self.clips:
            raise ValueError(
                f"no clips of {self.frames} frames (stride {self.stride}) under {self.root}: {len(sources)} video(s) "
                f"found, {len(self._skips.skipped)} unreadable, {len(self.too_short)} too short, "
                f"{self.num_ignored} other files"
            )

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every unreadable video skipped at construction."""
        return self._skips.skipped

    @staticmethod
    def _progress(items: list[Any], progress: bool | None) -> Any:
        if progress is False or (progress is None and len(items) <= 20):
            return items
        from tqdm.auto import tqdm

        return tqdm(items, desc="decoding videos", unit="video", disable=None if progress is None else False)

    def _decode(self, path: Path) -> Tensor:
        """Video ``path`` as uint8 (channels, kept frames, size, size)."""
        from PIL import Image

        from .video_io import read_video

        video = read_video(path, channels=self.channels)[:: self.stride]
        _, h, w, _ = video.shape
        m = min(h, w)
        if h != w:
            self._skips.warn_once(
                "crop", f"{path} is {w}x{h}, not square: frames are centre-cropped to {m}x{m} (notice shown once)"
            )
        top, left = (h - m) // 2, (w - m) // 2
        video = video[:, top : top + m, left : left + m]
        if m != self.size:
            resample = Image.BOX if m > self.size else Image.BICUBIC
            shape = (self.size, self.size, self.channels)
            planes = [np.ascontiguousarray(f[:, :, 0] if self.channels == 1 else f) for f in video]
            resized = [Image.fromarray(p).resize(shape[:2], resample) for p in planes]
            video = np.stack([np.asarray(im).reshape(shape) for im in resized])
        return torch.from_numpy(np.ascontiguousarray(video.transpose(3, 0, 1, 2)))

    def __len__(self) -> int:
        return len(self.clips)

    def get_levels(self, index: int) -> tuple[Tensor, int]:
        """(uint8 levels (channels, frames, size, size), 0): clips are unlabelled."""
        v, start = self.clips[index]
        return self._videos[v][:, start : start + self.frames].clone(), 0

    def frame(self, index: int, f: int) -> Tensor:
        """Frame ``f`` of clip ``index`` as an image (channels, size, size) (float, or levels with ``discrete``)."""
        if not 0 <= f < self.frames:
            raise IndexError(f"frame {f} out of range for clips of {self.frames} frames")
        v, start = self.clips[index]
        k = self._videos[v][:, start + f].clone()
        return k if self.discrete else from_levels(k, self.levels)

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name="video-folder",
            summary=f"video clips of {self.frames} frames (stride {self.stride}) under {self.root}",
            channels=self.channels,
            size=self.size,
            levels=256,
            num_classes=None,
            num_items={self.split: len(self)},
        )
