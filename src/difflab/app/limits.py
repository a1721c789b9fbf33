"""The app's input limits, checked on the server for every request (not only in the page).

Each check returns the value to use or raises :class:`AppError` with a one-line message, which the
page shows; a value left empty means "the model's own setting" where a tab says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MB = 2**20


class AppError(ValueError):
    """Input the app refuses, or a job it cannot do: a one-line message for the page."""


@dataclass(frozen=True)
class Limits:
    """The largest inputs one request may ask for."""

    image_side: int = 256  # pixels, width and height of an uploaded image
    image_bytes: int = 4 * MB
    audio_seconds: float = 10.0
    audio_bytes: int = 8 * MB
    video_bytes: int = 8 * MB
    steps: int = 256  # sampling steps (each stage), teacher steps, WaveGrad steps
    images: int = 16  # images (or clips) per request
    frames: int = 64  # frames of an uploaded or extended video
    text_chars: int = 300  # a prompt or a sentence to speak

    @property
    def upload_bytes(self) -> int:
        """The largest upload the server accepts at all (Gradio's ``max_file_size``)."""
        return max(self.image_bytes, self.audio_bytes, self.video_bytes)


DEFAULT_LIMITS = Limits()


def one_line(error: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


def _number(name: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AppError(f"{name}: {value!r} is not a number") from None
    if not math.isfinite(v):
        raise AppError(f"{name}: {value!r} is not a finite number")
    return v


def whole(name: str, value: Any, lo: int, hi: int, *, optional: bool = False) -> int | None:
    """``value`` as an integer in ``lo..hi`` (None when empty and ``optional``)."""
    v = _number(name, value)
    if v is None:
        if optional:
            return None
        raise AppError(f"{name}: give a whole number from {lo} to {hi}")
    if v != int(v):
        raise AppError(f"{name}: {value!r} is not a whole number")
    if v > hi:
        raise AppError(f"{name}: {int(v)} is over the limit of {hi}")
    if v < lo:
        raise AppError(f"{name}: {int(v)} is below the minimum of {lo}")
    return int(v)


def real(name: str, value: Any, lo: float, hi: float, *, optional: bool = False) -> float | None:
    """``value`` as a number in ``[lo, hi]`` (None when empty and ``optional``)."""
    v = _number(name, value)
    if v is None:
        if optional:
            return None
        raise AppError(f"{name}: give a number from {lo:g} to {hi:g}")
    if v > hi:
        raise AppError(f"{name}: {v:g} is over the limit of {hi:g}")
    if v < lo:
        raise AppError(f"{name}: {v:g} is below the minimum of {lo:g}")
    return v


def choice(name: str, value: Any, options: tuple[str, ...], default: str | None = None) -> str | None:
    """One of ``options``; ``default`` (and None, "", "default") stands for the model's own setting."""
    if value in (None, "", "default", default):
        return None
    if value not in options:
        raise AppError(f"{name}: {value!r} is not one of {', '.join(options)}")
    return str(value)


def text(name: str, value: Any, limit: int, *, required: bool = False) -> str:
    """Stripped text of at most ``limit`` characters (refused when empty and ``required``)."""
    s = "" if value is None else str(value).strip()
    if required and not s:
        raise AppError(f"{name}: type some text")
    if len(s) > limit:
        raise AppError(f"{name}: {len(s)} characters is over the limit of {limit}")
    return s


def upload(name: str, path: Any, max_bytes: int) -> Path:
    """An uploaded file that exists and is at most ``max_bytes`` long."""
    if path is None or (isinstance(path, str) and not path):
        raise AppError(f"{name}: upload a file first")
    p = Path(str(path))
    if not p.is_file():
        raise AppError(f"{name}: the uploaded file is gone; upload it again")
    size = p.stat().st_size
    if size > max_bytes:
        raise AppError(f"{name}: {p.name} is {size / MB:.1f} MB, over the limit of {max_bytes / MB:g} MB")
    if size == 0:
        raise AppError(f"{name}: {p.name} is empty")
    return p


def image_size(name: str, path: Path, limits: Limits) -> tuple[int, int]:
    """(width, height) of an uploaded image, read from its header (nothing decoded yet): refused when it is
    not an image Pillow reads or is larger than ``limits.image_side`` on a side."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise AppError(
            f"{name}: {path.name} is not an image file this app can read (PNG, BMP, GIF, TIFF ...)"
        ) from None
    if max(w, h) > limits.image_side:
        raise AppError(
            f"{name}: {path.name} is {w}x{h} pixels, over the limit of {limits.image_side}x{limits.image_side}"
        )
    return w, h
