"""A folder of the user's captioned images, for text-to-image training: items ``(x, {"caption": str})``.

Captions come from one of two layouts:

- ``root/captions.csv`` with the header ``path,caption`` (paths relative to ``root``, any CSV
  quoting; the file decides when it exists, and a path listed twice keeps its last caption);
- otherwise a ``.txt`` file with the same stem next to each image (``cat.png`` + ``cat.txt``),
  anywhere under ``root`` (searched recursively). Whitespace in a caption, newlines included,
  collapses to single spaces.

Image files are those with an extension Pillow registers; hidden files and folders (names
starting with ".") are ignored. Images without a caption, with an empty caption, or that Pillow
cannot open and ``verify()`` are skipped, counted in ``skipped`` as (path, reason) and reported in
one ``DataWarning``; so are ``captions.csv`` rows naming a missing file. A file that fails to
decode later is replaced by the next readable item and counted (as in image-folder).

Transform: RGB (``channels=3``; transparency composited on white) or greyscale (``channels=1``),
centre crop to a square, then Pillow bicubic resize (antialiased) to ``size`` x ``size``.

There is only a ``train`` split (every captioned image): keep held-out images in another folder
and load that as its own dataset.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .base import DatasetInfo, ImageDataset, SkipCounter, from_levels
from .folder import _check_image, _to_mode, _walk, image_extensions, load_first_readable

CSV_NAME = "captions.csv"
_HOW_TO = (
    "put images there with a caption in a .txt file of the same name (cat.png + cat.txt), "
    f"or a {CSV_NAME} with the header path,caption"
)


def _clean(text: str) -> str:
    return " ".join(text.split())


def _read_txt(image: Path) -> tuple[str | None, str]:
    """(caption, "") from the .txt file next to ``image``, or (None, why there is none)."""
    txt = image.with_suffix(".txt")
    if not txt.is_file():
        return None, f"missing caption (no {txt.name})"
    try:
        return _clean(txt.read_text(encoding="utf-8")), ""
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable caption {txt.name}: {type(e).__name__}: {e}"


class CaptionFolder(ImageDataset):
    """Captioned images under ``root`` as ((C, size, size) in [-1, 1], {"caption": str}) (see module doc).

    Options: ``size`` (default 64), ``channels`` (3 or 1), ``discrete`` (uint8 levels).
    Attributes: ``files`` and ``captions`` (kept images and their captions, in path order),
    ``skipped`` (list of (path, reason)), ``source`` ("csv" or "txt").
    """

    splits = ("train",)
    cond_keys = ("caption",)

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        size: int = 64,
        channels: Literal[1, 3] = 3,
        discrete: bool = False,
    ) -> None:
        if split not in self.splits:
            raise ValueError(
                f"unknown split {split!r}; valid splits: train (caption-folder trains on every captioned image; "
                "load held-out images from another folder)"
            )
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"caption folder {self.root} does not exist or is not a folder")
        self.split, self.size, self.channels = split, int(size), int(channels)
        self.discrete, self.levels = bool(discrete), 256
        self._skips = SkipCounter(f"caption-folder {self.root}")

        exts = image_extensions()
        images = [p for p in _walk(self.root) if p.suffix.lower() in exts]
        csv_path = self.root / CSV_NAME
        self.source = "csv" if csv_path.is_file() else "txt"
        # (image path, caption or None, why it has none)
        candidates: list[tuple[Path, str | None, str]]
        if self.source == "csv":
            table = self._read_csv(csv_path)
            listed = {self.root / rel for rel in table}
            unlisted = f"missing caption (not listed in {CSV_NAME})"
            candidates = [(p, None, unlisted) for p in images if p not in listed]
            candidates += [(self.root / rel, caption, "") for rel, caption in table.items()]
            candidates.sort(key=lambda c: c[0].as_posix())
        else:
            candidates = [(p, *_read_txt(p)) for p in images]

        self.files: list[Path] = []
        self.captions: list[str] = []
        for path, caption, why in candidates:
            if caption is None:
                self._skips.add(str(path), why)
            elif not caption:
                self._skips.add(str(path), "empty caption")
            elif not path.is_file():
                self._skips.add(str(path), f"listed in {CSV_NAME} but not found")
            elif (reason := _check_image(path, full=False)) is not None:
                self._skips.add(str(path), reason)
            else:
                self.files.append(path)
                self.captions.append(caption)
        if self._skips.skipped:
            path, reason = self._skips.skipped[0]
            msg = f"skipped {len(self._skips.skipped)} image(s) without a usable caption or unreadable"
            self._skips.warn_once("scan", f"{msg} (first: {path}: {reason})")
        if not self.files:
            raise ValueError(f"no captioned images under {self.root} ({len(self._skips.skipped)} skipped): {_HOW_TO}")

    def _read_csv(self, path: Path) -> dict[str, str]:
        """{normalised relative path: caption} from ``captions.csv``; a bad header is a ValueError."""
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [(name or "").strip().lower() for name in reader.fieldnames or ()]
            if "path" not in fields or "caption" not in fields:
                raise ValueError(f"{path} needs the header path,caption, got {','.join(fields) or 'nothing'}")
            reader.fieldnames = fields
            table = {}
            for row in reader:
                rel = (row.get("path") or "").strip()
                if rel:
                    table[Path(os.path.normpath(rel)).as_posix()] = _clean(row.get("caption") or "")
        return table

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every image skipped so far (at construction and while loading)."""
        return self._skips.skipped

    def __len__(self) -> int:
        return len(self.files)

    def _index(self, index: int) -> tuple[Tensor, int]:
        return load_first_readable(self.files, index, self._load, self._skips, f"caption-folder {self.root}")

    def get_levels(self, index: int) -> tuple[Tensor, int]:
        """(uint8 levels (C, size, size), 0): captioned images have no class label."""
        return self._index(index)[0], 0

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        n = len(self.files)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        k, i = self._index(index % n)
        return (k if self.discrete else from_levels(k, self.levels)), {"caption": self.captions[i]}

    def _load(self, path: Path) -> Tensor:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            im = _to_mode(im, "RGB" if self.channels == 3 else "L")
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side))
        if side != self.size:
            im = im.resize((self.size, self.size), Image.BICUBIC)
        arr = np.asarray(im, dtype=np.uint8).reshape(self.size, self.size, self.channels)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name="caption-folder",
            summary=f"captioned images under {self.root} (captions from {self.source})",
            channels=self.channels,
            size=self.size,
            levels=256,
            num_classes=None,
            num_items={self.split: len(self)},
        )
