"""Images from a folder tree (PNG, JPEG and anything else Pillow reads), optionally one folder per class.

Layout: if ``root`` has sub-folders, each is a class (labels = sorted folder names, images found
recursively inside each); otherwise every image directly or recursively under ``root`` has label 0.
Hidden files and folders (names starting with ".") are ignored. If ``root/train`` and ``root/test``
both exist they are the two splits; otherwise ``test_fraction`` assigns each file to a split by a
stable hash (BLAKE2b) of its relative path (the whole tree is the train split when ``test_fraction=0``).

Robustness: at construction every file with an image extension is opened and checked with Pillow's
``verify()`` (header and structure, PNG checksums; a progress bar shows for large trees), or fully
decoded with ``verify="decode"``. Failures are skipped, counted in ``skipped`` and reported in one
``DataWarning``; files without an image extension are ignored and counted in ``num_ignored``.
A file that still fails to decode later (e.g. truncated JPEG data, which ``verify()`` cannot see)
is replaced by the next readable item and counted in ``skipped`` (one more warning the first time;
in DataLoader workers each worker counts and warns on its own copy).

Bit depth: images are scaled by their type's range to 8-bit levels. 16-bit greyscale images (PNG,
TIFF, PGM) become ``round(value * 255 / 65535)``, with one ``DataWarning`` the first time (Pillow
itself reduces 16-bit RGB to its high byte, and 1-bit images to 0 and 255). 32-bit integer and
floating-point images have no agreed range: they are skipped as unreadable, with the reason.

Transform: convert to RGB (``channels=3``; transparency composited on white) or greyscale
(``channels=1``), resize the shorter side to ``resize`` (default ``size``; Pillow bicubic, which
antialiases), then a ``size`` x ``size`` centre or random crop and an optional random flip.
Random crops and flips use torch's global RNG, which DataLoader seeds per worker from its generator.

Inferred options. ``channels`` and ``size`` left out (None) are read off the images' headers
during the scan: ``channels=1`` when every image is greyscale (modes 1, L, LA, I, 16-bit, or a
palette of greys), else 3; ``size`` from the images' shorter side (the one they all share, else
the most common one; ties go to the smaller), rounded down to a multiple of ``size_multiple``
(the trainer passes what its U-Net needs, ``2 ** num_down``): by a centre crop when that keeps
at least ``1 - CROP_WARN`` of the area (``resize`` stays at that side, no resampling), else by
shrinking; only images smaller than ``size_multiple`` are enlarged to it.
What was chosen is said in one ``DataWarning`` and kept in ``inferred`` (the trainer writes it
into the run's ``data.options``, so sampling and evaluation rebuild the same images). Whether
chosen or given, one more ``DataWarning`` says when the transform changes the images
noticeably: images enlarged (their shorter side below ``resize``), colour images turned grey
(``channels=1``), or a centre crop that cuts away more than ``CROP_WARN`` of an image's area.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .base import DatasetInfo, ImageDataset, SkipCounter

SPLITS = ("train", "test")
CROP_WARN = 0.1  # warn when the centre crop cuts away more than this share of an image's area
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})  # and every "I;16..." mode


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions that Pillow can open (e.g. ".png", ".jpg")."""
    from PIL import Image

    return frozenset(ext.lower() for ext in Image.registered_extensions())


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _walk(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return out


def load_first_readable(
    files: list[Path], index: int, load: Callable[[Path], Tensor], skips: SkipCounter, what: str
) -> tuple[Tensor, int]:
    """``(load(files[i]), i)`` for the first ``i`` from ``index`` on (cyclically) whose file decodes; each
    failure is counted in ``skips`` (one warning), so a file that went bad after the scan costs one item."""
    n = len(files)
    for attempt in range(n):
        i = (index + attempt) % n
        try:
            return load(files[i]), i
        except Exception as e:  # any decoder failure means "corrupt file"
            reason = f"{type(e).__name__}: {e}"
            skips.add(str(files[i]), reason)
            skips.warn_once(
                "load",
                f"cannot decode {files[i]} ({reason}); using the next image instead "
                "(later failures are only counted in .skipped)",
            )
    raise RuntimeError(f"{what}: no image could be decoded")


class ImageFolder(ImageDataset):
    """A folder of images as (C, size, size) tensors in [-1, 1] with class labels (see module doc).

    Attributes: ``files`` (readable image paths), ``targets`` (their labels), ``class_names``,
    ``skipped`` (list of (path, reason) for unreadable files), ``num_ignored`` (non-image files),
    ``inferred`` (the options chosen from the images: channels, size, resize; see the module doc).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        size: int | None = None,
        resize: int | None = None,
        crop: Literal["center", "random"] = "center",
        channels: Literal[1, 3] | None = None,
        flip: bool = False,
        discrete: bool = False,
        test_fraction: float = 0.0,
        verify: Literal["header", "decode"] = "header",
        progress: bool | None = None,
        size_multiple: int = 1,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if (size is not None and size < 1) or (resize is not None and resize < (size or 1)):
            raise ValueError(f"need size >= 1 and resize >= size, got size={size}, resize={resize}")
        if size_multiple < 1:
            raise ValueError(f"size_multiple must be >= 1, got {size_multiple}")
        if crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3 (or left out: inferred), got {channels!r}")
        if verify not in ("header", "decode"):
            raise ValueError(f"verify must be 'header' or 'decode', got {verify!r}")
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a folder")
        self.split = split
        self.crop, self.flip, self.discrete = crop, bool(flip), bool(discrete)
        self.levels = 256

        base, hashed = self.root, test_fraction > 0
        if (self.root / "train").is_dir() and (self.root / "test").is_dir():
            base, hashed = self.root / split, False
        elif split == "test" and not hashed:
            raise ValueError(f"{self.root} has no train/ and test/ folders: pass test_fraction > 0 for a test split")
        class_dirs = sorted(p for p in base.iterdir() if p.is_dir() and _visible(p))
        self.class_names = tuple(p.name for p in class_dirs) or ("",)
        self.cond_keys = ("class",) if class_dirs else ()  # a flat folder is unlabelled
        sources = [(d, i) for i, d in enumerate(class_dirs)] or [(base, 0)]
        # In class mode, files lying directly in `base` belong to no class: ignored.
        self.num_ignored = sum(1 for p in base.iterdir() if p.is_file() and _visible(p)) if class_dirs else 0

        exts = image_extensions()
        candidates: list[tuple[Path, int]] = []
        for folder, label in sources:
            for path in _walk(folder):
                if path.suffix.lower() not in exts:
                    self.num_ignored += 1
                    continue
                if hashed:
                    in_test = _unit_hash(path.relative_to(base).as_posix()) < test_fraction
                    if in_test != (split == "test"):
                        continue
                candidates.append((path, label))

        self._skips = SkipCounter(f"image-folder {self.root}")
        self.files: list[Path] = []
        self.targets: list[int] = []
        dims: list[tuple[int, int]] = []
        greys: list[bool] = []
        for path, label in self._progress(candidates, progress):
            reason, wh, grey = _inspect_image(path, full=verify == "decode")
            if reason is None:
                self.files.append(path)
                self.targets.append(label)
                dims.append(wh)
                greys.append(grey)
            else:
                self._skips.add(str(path), reason)
        if self._skips.skipped:
            path, reason = self._skips.skipped[0]
            ignored = f"; ignored {self.num_ignored} non-image file(s)" if self.num_ignored else ""
            msg = f"skipped {len(self._skips.skipped)} unreadable image file(s) (first: {path}: {reason}){ignored}"
            self._skips.warn_once("verify", msg)
        if not self.files:
            raise ValueError(
                f"no readable images under {base} (split {split!r}; {len(self._skips.skipped)} unreadable, "
                f"{self.num_ignored} non-image files)"
            )
        self.inferred: dict[str, int] = {}
        self._choose_shape(size, resize, channels, size_multiple, dims, greys)

    def _choose_shape(
        self,
        size: int | None,
        resize: int | None,
        channels: int | None,
        multiple: int,
        dims: list[tuple[int, int]],
        greys: list[bool],
    ) -> None:
        """Set ``size``, ``resize`` and ``channels`` (inferring those left out, with one notice), then
        warn once if the transform enlarges images, turns colour grey or crops much away (module doc)."""
        from collections import Counter

        n, notes = len(dims), []
        if channels is None:
            colour = n - sum(greys)
            channels = 3 if colour else 1
            why = "every image is greyscale" if not colour else f"{colour} of {n} images are in colour"
            self.inferred["channels"] = channels
            notes.append(f"channels={channels} ({why})")
        if size is None:
            shorts = Counter(min(w, h) for w, h in dims)
            side = resize if resize is not None else min(shorts, key=lambda s: (-shorts[s], s))
            size = side // multiple * multiple if side >= multiple else multiple
            if resize is None:  # a small excess is cropped away, a larger one resampled: never enlarge
                resize = side if size < side and (size / side) ** 2 >= 1.0 - CROP_WARN else size
            self.inferred["size"] = size
            if len(set(dims)) == 1:
                why = f"every image is {dims[0][0]}x{dims[0][1]}"
            elif len(shorts) == 1:
                why = f"every image's shorter side is {side}"
            else:
                spread = f"{min(shorts)} to {max(shorts)}"
                why = f"the most common shorter side, {side} ({shorts[side]} of {n} images; {spread})"
            if size != side:
                how = "enlarged" if size > side else "centre-cropped" if resize == side else "shrunk"
                why += f"; {how} to a multiple of {multiple}, what the U-Net takes"
            if resize != size:
                self.inferred["resize"] = resize
            notes.append(f"size={size} ({why})")
        self.size, self.resize, self.channels = int(size), int(resize or size), int(channels)
        if notes:
            hint = "; on a CPU, size=64 or less trains much faster" if self.size > 128 else ""
            how = "pass size= / channels= (data.options in a run config) to choose otherwise"
            self._skips.warn_once("infer", f"chose {' and '.join(notes)}; {how}{hint}")
        self._warn_changes(dims, greys)

    def _warn_changes(self, dims: list[tuple[int, int]], greys: list[bool]) -> None:
        """One DataWarning naming every noticeable change the transform makes (module doc)."""
        n, changes = len(dims), []
        small = [i for i, (w, h) in enumerate(dims) if min(w, h) < self.resize]
        if small:
            w, h = dims[small[0]]
            changes.append(
                f"{len(small)} of {n} images are enlarged to {self.resize} pixels on their shorter side, "
                f"which blurs them (first: {self.files[small[0]]}, {w}x{h})"
            )
        if self.channels == 1 and not all(greys):
            colour = [i for i, g in enumerate(greys) if not g]
            first = self.files[colour[0]]
            changes.append(f"{len(colour)} of {n} colour images become grey (channels=1; first: {first})")
        kept = []
        for w, h in dims:
            short, long = min(w, h), max(w, h)
            long_scaled = max(self.resize, round(long * self.resize / short))
            kept.append(self.size * self.size / (self.resize * long_scaled))
        cropped = [i for i, k in enumerate(kept) if k < 1.0 - CROP_WARN]
        if cropped:
            worst = min(cropped, key=lambda i: kept[i])
            w, h = dims[worst]
            changes.append(
                f"the {self.size}x{self.size} crop cuts away more than {CROP_WARN:.0%} of {len(cropped)} of {n} "
                f"images (most: {self.files[worst]}, {w}x{h}, keeps {kept[worst]:.0%})"
            )
        if changes:
            self._skips.warn_once("changes", "; ".join(changes))

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every file skipped so far (at construction and while loading)."""
        return self._skips.skipped

    @staticmethod
    def _progress(items: list[Any], progress: bool | None) -> Any:
        if progress is False or (progress is None and len(items) < 2000):
            return items
        from tqdm.auto import tqdm

        return tqdm(items, desc="verifying images", unit="img", disable=None if progress is None else False)

    def __len__(self) -> int:
        return len(self.files)

    def get_levels(self, index: int) -> tuple[Tensor, int]:
        k, i = load_first_readable(self.files, index, self._load, self._skips, f"image-folder {self.root}")
        return k, self.targets[i]

    def _load(self, path: Path) -> Tensor:
        from PIL import Image

        with Image.open(path) as im:
            depth = _bit_depth(im)
            im.load()
            if depth == 16:
                im = _sixteen_to_eight(im)
                self._skips.warn_once(
                    "16-bit", f"{path} is a 16-bit image: scaled to 8-bit levels (value * 255 / 65535, rounded); "
                    "later 16-bit images are scaled the same way without a notice",
                )  # fmt: skip
            im = _to_mode(im, "RGB" if self.channels == 3 else "L")
        w, h = im.size
        if min(w, h) != self.resize:
            scale = self.resize / min(w, h)
            im = im.resize((max(self.resize, round(w * scale)), max(self.resize, round(h * scale))), Image.BICUBIC)
        w, h = im.size
        if self.crop == "random":
            top = int(torch.randint(0, h - self.size + 1, ()))
            left = int(torch.randint(0, w - self.size + 1, ()))
        else:
            top, left = (h - self.size) // 2, (w - self.size) // 2
        im = im.crop((left, top, left + self.size, top + self.size))
        arr = np.asarray(im, dtype=np.uint8).reshape(self.size, self.size, self.channels)
        k = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
        if self.flip and bool(torch.rand(()) < 0.5):
            k = k.flip(-1)
        return k

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name="image-folder",
            summary=f"images under {self.root}",
            channels=self.channels,
            size=self.size,
            levels=256,
            num_classes=len(self.class_names),
            class_names=self.class_names,
            num_items={self.split: len(self)},
        )


def _unit_hash(text: str) -> float:
    """A stable, well-mixed number in [0, 1) for ``text`` (the first 8 bytes of its BLAKE2b digest)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def _to_mode(im: Any, mode: str) -> Any:
    """Convert a Pillow image to ``mode`` ("RGB" or "L"), compositing any transparency on white."""
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return im.convert(mode)


def _bit_depth(im: Any) -> int:
    """Bits per sample of an opened, not yet loaded, greyscale Pillow image: 16 (mode ``I;16...``, or
    ``I`` read from 16-bit samples, as for 16-bit PGM), 32 (other ``I`` and ``F`` images), else 8."""
    if im.mode.startswith("I;16"):
        return 16
    if im.mode not in ("I", "F"):
        return 8
    try:
        args = im.tile[0][3]
        raw = args[0] if isinstance(args, tuple) else args
    except (IndexError, TypeError):
        raw = ""
    return 16 if isinstance(raw, str) and raw.startswith("I;16") else 32


def _sixteen_to_eight(im: Any) -> Any:
    """A 16-bit greyscale image as 8-bit levels ``round(value * 255 / 65535)`` (mode L)."""
    from PIL import Image

    v = np.asarray(im).astype(np.int64).clip(0, 65535)
    return Image.fromarray(((v * 255 + 32767) // 65535).astype(np.uint8))  # exact rounding: 65535 is odd


def _is_grey(im: Any) -> bool:
    """Whether an opened Pillow image holds grey levels only (by its mode, or its palette's colours)."""
    if im.mode in GREY_MODES or im.mode.startswith("I;16"):
        return True
    if im.mode in ("P", "PA"):
        try:
            raw, mode = bytes(im.palette.palette), im.palette.mode
            step = len(mode)
            if mode not in ("RGB", "RGBA") or not raw:
                return False
            return all(raw[i] == raw[i + 1] == raw[i + 2] for i in range(0, len(raw) - 2, step))
        except Exception:  # no readable palette: treat as colour
            return False
    return False


def _inspect_image(path: Path, full: bool) -> tuple[str | None, tuple[int, int], bool]:
    """(None if Pillow can open and verify, or fully decode, ``path``, else the reason it cannot;
    its (width, height); whether it is greyscale), all from one opening."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            wh, grey = (int(im.size[0]), int(im.size[1])), _is_grey(im)
            if _bit_depth(im) == 32:
                kind = "floating-point" if im.mode == "F" else "integer"
                reason = f"a 32-bit {kind} image (mode {im.mode}) has no agreed range; image-folder reads 1- to 16-bit"
                return reason, wh, grey
            if full:
                im.load()
            else:
                im.verify()
    except Exception as e:  # Pillow raises many exception types for bad files
        return f"{type(e).__name__}: {e}", (0, 0), False
    return None, wh, grey


def _check_image(path: Path, full: bool) -> str | None:
    """None if Pillow can open (and verify, or fully decode) ``path``, else the reason it cannot."""
    return _inspect_image(path, full)[0]
