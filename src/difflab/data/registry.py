"""Datasets by name: ``get_dataset(name, split, **options)``, ``describe(name)``, ``list_datasets()``."""

from __future__ import annotations

import inspect
from typing import Any

from . import digits, fashion_mnist, photos, scenes, video
from .base import DatasetInfo, ImageDataset
from .captions import CaptionFolder
from .digits import Digits
from .fashion_mnist import FashionMNIST
from .folder import ImageFolder
from .photos import PhotoCrops
from .scenes import CaptionedScenes
from .video import MovingItems, VideoFolder

_CLASSES: dict[str, type[ImageDataset]] = {
    "caption-folder": CaptionFolder,
    "digits": Digits,
    "fashion-mnist": FashionMNIST,
    "image-folder": ImageFolder,
    "moving-items": MovingItems,
    "photo-crops": PhotoCrops,
    "scenes": CaptionedScenes,
    "video-folder": VideoFolder,
}

_INFO: dict[str, DatasetInfo] = {
    "caption-folder": DatasetInfo(
        name="caption-folder",
        summary="Pillow-readable images under root= captioned by same-name .txt files or captions.csv "
        "(size=, channels= options; train split only)",
        channels=None, size=None, levels=256, num_classes=None,
    ),
    "digits": DatasetInfo(
        name="digits", summary=digits.SUMMARY + "; the embedded default for demos and tests", channels=1, size=8,
        levels=digits.DIGITS_LEVELS, num_classes=10, class_names=digits.DIGIT_CLASSES,
        num_items={"train": 1497, "test": 300},
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist", summary=fashion_mnist.SUMMARY + "; Debian package dataset-fashion-mnist or root=",
        channels=1, size=28, levels=256, num_classes=10, class_names=fashion_mnist.FASHION_CLASSES,
        num_items={"train": 60000, "test": 10000},
    ),
    "image-folder": DatasetInfo(
        name="image-folder",
        summary="Pillow-readable images under root=, one sub-folder per class (size=, channels= options; inferred "
        "from the images when left out)",
        channels=None, size=None, levels=256, num_classes=None,
    ),
    "moving-items": DatasetInfo(
        name="moving-items", summary=video.MOVING_SUMMARY + " (videos (1, frames, size, size): frames=16, size=32, "
        "stride= options; class = first item's kind; cond tracks)", channels=1, size=32, levels=256,
        num_classes=len(scenes.ITEMS), class_names=scenes.ITEMS, num_items=dict(video.DEFAULT_COUNTS),
    ),
    "photo-crops": DatasetInfo(
        name="photo-crops", summary=photos.SUMMARY + " (size=64 default; label = photo index; test = held-out photos)",
        channels=3, size=64, levels=256, num_classes=len(photos.TRAIN_PHOTOS), class_names=photos.TRAIN_PHOTOS,
        num_items={"train": 10000, "test": 1000},
    ),
    "scenes": DatasetInfo(
        name="scenes", summary=scenes.SUMMARY + ", captioned in English (size=64 default; splits test unseen "
        "paraphrase for held-out colour pairs and reworded captions)", channels=3, size=64, levels=256,
        num_classes=None, num_items=dict(scenes.DEFAULT_COUNTS),
    ),
    "video-folder": DatasetInfo(
        name="video-folder",
        summary="videos (.gif, .mp4, .webm, .avi, .mov, .mkv or folders of frame images) under root= as clips "
        "(channels, frames, size, size) (frames=, stride=, size=, channels= options; train split only)",
        channels=None, size=None, levels=256, num_classes=None,
    ),
}  # fmt: skip


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key not in _CLASSES:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(sorted(_CLASSES))}")
    return key


def list_datasets() -> list[str]:
    """The registered dataset names."""
    return sorted(_CLASSES)


def describe(name: str) -> DatasetInfo:
    """What dataset ``name`` holds with its default options (``None`` fields depend on options)."""
    return _INFO[_canonical(name)]


def dataset_options(name: str) -> list[str]:
    """The keyword options ``get_dataset(name, ...)`` accepts."""
    params = inspect.signature(_CLASSES[_canonical(name)]).parameters
    return [p for p in params if p != "split"]


def get_dataset(name: str, split: str = "train", **options: Any) -> ImageDataset:
    """Build dataset ``name`` (see :func:`list_datasets`) for ``split``.

    Items are ``(float32 image (C, H, W) in [-1, 1], cond dict)``, or ``(uint8 levels, cond)``
    with ``discrete=True``. The valid splits are the class's ``splits`` ("train", "test" unless it
    says otherwise). An unknown name, split or option is a ValueError listing the valid ones.
    """
    key = _canonical(name)
    splits = getattr(_CLASSES[key], "splits", ("train", "test"))
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(splits)}")
    valid = dataset_options(key)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        bad, ok = ", ".join(unknown), ", ".join(valid)
        raise ValueError(f"unknown option(s) {bad} for dataset {key!r}; valid options: {ok}")
    if key == "image-folder" and "root" not in options:
        raise ValueError("dataset 'image-folder' needs root= (a folder of images, optionally one sub-folder per class)")
    if key == "caption-folder" and "root" not in options:
        raise ValueError("dataset 'caption-folder' needs root= (a folder of images with same-name .txt captions)")
    if key == "video-folder" and "root" not in options:
        raise ValueError("dataset 'video-folder' needs root= (a folder of video files or of folders of frame images)")
    return _CLASSES[key](split=split, **options)
