"""The shared shape of every difflab image dataset: integer pixels underneath, [-1, 1] floats on top.

Every image dataset stores or produces its pixels as integer *levels* ``0 .. levels-1``
(uint8): 17 levels for the 8x8 digits (their raw values 0..16), 256 for everything else.
An item is the pair ``(image, cond)``:

- ``image``: float32 tensor of shape (C, H, W) in [-1, 1], ``x = 2 k / (levels - 1) - 1``
  (``from_levels``); with ``discrete=True`` it is the uint8 tensor of levels ``k`` itself,
  the view that discrete models (autoregressive diffusion) need;
- ``cond``: the item's condition dict, ``{"class": label}`` (a Python int; 0 for unlabelled
  data; captioned datasets give ``{"caption": str, ...}``). ``cond_keys`` names the keys a
  dataset provides; :func:`collate` batches them.

``to_levels`` is the exact inverse of ``from_levels`` on the level grid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset


class DataWarning(UserWarning):
    """Raised (as a warning) when a dataset skips unreadable records."""


def from_levels(k: Tensor, levels: int) -> Tensor:
    """Integer levels ``0..levels-1`` -> float32 in [-1, 1]: ``x = 2 k / (levels - 1) - 1``."""
    _check_levels(levels)
    return k.to(torch.float32) * (2.0 / (levels - 1)) - 1.0


def to_levels(x: Tensor, levels: int) -> Tensor:
    """Floats in [-1, 1] -> nearest integer level in ``0..levels-1`` (uint8; values outside are clamped)."""
    _check_levels(levels)
    k = torch.round((x.to(torch.float32) + 1.0) * ((levels - 1) / 2.0))
    return k.clamp_(0, levels - 1).to(torch.uint8)


def _check_levels(levels: int) -> None:
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must be in 2..256, got {levels!r}")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds. ``None`` means "set by the options" (e.g. image-folder's size).

    ``size`` is the image height and width (square images); ``num_items`` maps split -> count.
    """

    name: str
    summary: str
    channels: int | None
    size: int | None
    levels: int
    num_classes: int | None
    class_names: tuple[str, ...] | None = None
    num_items: dict[str, int] | None = field(default=None)

    def __str__(self) -> str:
        shape = f"{self.channels or '?'}x{self.size or '?'}x{self.size or '?'}"
        items = ", ".join(f"{k} {v:,}" for k, v in self.num_items.items()) if self.num_items else "items: ?"
        classes = "?" if self.num_classes is None else str(self.num_classes)
        return f"{self.name}: {self.summary} [{shape}, {self.levels} levels, {classes} classes, {items}]"


def collate(items: list[tuple[Tensor, dict[str, Any]]]) -> tuple[Tensor, dict[str, Tensor | list[str]]]:
    """One batch from items ``(x, cond)``: ``x`` stacked, each condition key stacked on its own.

    Tensors keep their dtype; Python ints become int64, floats float32 and bools bool, so a
    class label stays an integer and a low-resolution image stays a float image. Strings (e.g.
    captions) become a ``list[str]`` in item order.
    """
    x = torch.stack([torch.as_tensor(item[0]) for item in items])
    keys = items[0][1].keys()
    for i, item in enumerate(items):
        if item[1].keys() != keys:
            raise ValueError(f"item {i} has condition keys {sorted(item[1])}, item 0 has {sorted(keys)}")
    return x, {k: _collate_values(k, [item[1][k] for item in items]) for k in keys}


def _collate_values(key: str, values: list[Any]) -> Tensor | list[str]:
    is_str = [isinstance(v, str) for v in values]
    if all(is_str):
        return list(values)
    if any(is_str):
        i = is_str.index(not is_str[0])
        kinds = f"item {i} is {type(values[i]).__name__}, item 0 {type(values[0]).__name__}"
        raise ValueError(f"condition {key!r} mixes strings and other values: {kinds}")
    return torch.stack([torch.as_tensor(v) for v in values])


class ImageDataset(Dataset[tuple[Tensor, dict[str, Any]]]):
    """Base class: subclasses implement ``__len__`` and ``get_levels(i) -> (uint8 (C,H,W), label)``.

    ``__getitem__`` returns ``(float32 image in [-1, 1], {"class": label})``, or uint8 levels in
    place of the image when the dataset was built with ``discrete=True``.
    """

    levels: int = 256
    discrete: bool = False
    split: str = "train"
    splits: tuple[str, ...] = ("train", "test")  # the splits the class accepts (checked by get_dataset)
    cond_keys: tuple[str, ...] = ("class",)

    def get_levels(self, index: int) -> tuple[Tensor, int]:
        """Return item ``index`` as (uint8 tensor (C, H, W) of levels 0..levels-1, int label)."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        k, label = self.get_levels(index % n)
        cond = {"class": label} if "class" in self.cond_keys else {}
        return (k if self.discrete else from_levels(k, self.levels)), cond

    @property
    def info(self) -> DatasetInfo:
        """A concrete description of this instance (its split, size and options)."""
        raise NotImplementedError


class SkipCounter:
    """Collects (path, reason) for skipped records and warns about them at most once per message kind."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.skipped: list[tuple[str, str]] = []
        self._warned: set[str] = set()

    def add(self, path: str, reason: str) -> None:
        self.skipped.append((path, reason))

    def warn_once(self, kind: str, message: str) -> None:
        """Emit ``f"{what}: {message}"`` as a DataWarning, only the first time for this ``kind``."""
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(f"{self.what}: {message}", DataWarning, stacklevel=3)
