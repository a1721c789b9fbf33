"""Video files: write sample videos (GIF, MP4) and filmstrips (PNG), read videos and frame folders.

Tensors are in the dataset layout: one video is (C, F, H, W) in [-1, 1] (C = 1 or 3), a batch
(B, C, F, H, W). Values outside [-1, 1] are clamped and non-finite values become 0 (grey), as in
:func:`~difflab.data.make_grid`.

- :func:`save_video` writes ``.gif`` (Pillow, looping; grey frames exactly, colour frames quantised
  to a 256-colour palette) or ``.mp4`` (PyAV, libx264, yuv420p at CRF 17, nearly lossless); a batch
  is tiled side by side in every frame with a 1-pixel white gap.
- :func:`save_filmstrip` writes one PNG row per video and one column per frame.
- :func:`read_video` decodes a video file (GIF with Pillow, the other formats with imageio's PyAV
  plugin) or a folder of frame images (Pillow, sorted by file name) into uint8 (F, H, W, C).

imageio and PyAV are optional (the ``video`` extra: ``pip install 'difflab[video]'``) and are
imported only when a function needs them; GIFs, frame folders and filmstrips need only Pillow.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

VIDEO_EXTENSIONS = (".gif", ".mp4", ".webm", ".avi", ".mov", ".mkv")  # what read_video decodes
SAVE_EXTENSIONS = (".gif", ".mp4")  # what save_video writes
MP4_MIN_SIDE = 64  # MP4 frames are enlarged (nearest neighbour) to at least this many pixels a side
MP4_CRF = 17  # libx264 constant rate factor: 0 lossless .. 51 worst; 17 is visually lossless
FILMSTRIP_MIN_SIDE = 32
_HOW_TO_INSTALL = "pip install 'difflab[video]'"


def _import_imageio() -> Any:
    try:
        import imageio.v3 as iio
    except ImportError as e:
        raise ImportError(f"reading video files needs imageio: {_HOW_TO_INSTALL}") from e
    return iio


def _import_av() -> Any:
    try:
        import av
    except ImportError as e:
        raise ImportError(f"MP4 and other video files need PyAV (the av package): {_HOW_TO_INSTALL}") from e
    return av


def _video_pixels(x: Tensor) -> np.ndarray:
    """(C, F, H, W) or (B, C, F, H, W) in [-1, 1] -> uint8 (B, F, H, W, C)."""
    t = torch.as_tensor(x).detach().to("cpu", torch.float32)
    if t.ndim == 4:
        t = t[None]
    if t.ndim != 5 or t.shape[1] not in (1, 3) or min(t.shape) < 1:
        shape = tuple(t.shape)
        raise ValueError(f"videos must have shape (C, F, H, W) or (B, C, F, H, W) with C in (1, 3), got {shape}")
    pix = ((t.nan_to_num(0.0, 0.0, 0.0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pix.permute(0, 2, 3, 4, 1).numpy()


def _tile(pix: np.ndarray, gap: int = 1) -> np.ndarray:
    """uint8 (B, F, H, W, C) -> (F, H, B*W + (B-1)*gap, C): the videos side by side, white gaps."""
    b, f, h, w, c = pix.shape
    out = np.full((f, h, b * w + (b - 1) * gap, c), 255, dtype=np.uint8)
    for i in range(b):
        out[:, :, i * (w + gap) : i * (w + gap) + w] = pix[i]
    return out


def _temporary(path: Path) -> Path:
    """A hidden sibling of ``path`` with the same suffix (writers pick the format by suffix)."""
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def save_video(x: Tensor, path: str | os.PathLike[str], fps: float = 8) -> Path:
    """Write a video (C, F, H, W) in [-1, 1], or a batch (B, C, F, H, W) tiled side by side, to ``path``.

    The suffix picks the format: ``.gif`` (Pillow; loops forever; grey videos are stored exactly,
    colour ones quantised to 256 colours; frame times are whole multiples of 10 ms; Pillow merges
    identical consecutive frames into one longer frame, which :func:`read_video` repeats back from
    the frame time recorded in the GIF's comment, so every frame reads back) or ``.mp4`` (PyAV,
    libx264, yuv420p, CRF 17; frames are enlarged by nearest neighbour to at least 64 pixels a side
    and padded by repeating the last row / column to even sizes, as H.264 requires). Writes
    atomically (a temporary file, then rename); returns the path.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAVE_EXTENSIONS:
        valid = ", ".join(SAVE_EXTENSIONS)
        raise ValueError(f"unknown video suffix {path.suffix!r} for {path}; valid suffixes: {valid}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    frames = _tile(_video_pixels(x))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        if suffix == ".gif":
            _write_gif(frames, tmp, fps)
        else:
            _write_mp4(frames, tmp, fps)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_gif(frames: np.ndarray, path: Path, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(f[:, :, 0] if f.shape[2] == 1 else f) for f in frames]
    duration = max(10, round(100.0 / fps) * 10)  # GIF frame times are whole hundredths of a second
    # Pillow merges identical consecutive frames into one longer frame; the comment lets read_video undo that.
    comment = f"difflab frame_ms={duration}"
    images[0].save(
        path, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0, comment=comment
    )


def _write_mp4(frames: np.ndarray, path: Path, fps: float) -> None:
    av = _import_av()
    from fractions import Fraction

    _, h, w, c = frames.shape
    k = math.ceil(MP4_MIN_SIDE / min(h, w))
    if k > 1:
        frames = frames.repeat(k, axis=1).repeat(k, axis=2)
    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    if c == 1:
        frames = frames.repeat(3, axis=3)
    frames = np.ascontiguousarray(frames)
    with av.open(str(path), mode="w", format="mp4") as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream("libx264", rate=rate, options={"crf": str(MP4_CRF)})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder


def save_filmstrip(x: Tensor, path: str | os.PathLike[str], max_frames: int | None = None) -> Path:
    """Write videos (C, F, H, W) or (B, C, F, H, W) in [-1, 1] as a PNG: one row per video, one column per frame.

    Frames are enlarged by an integer factor (nearest neighbour) to at least 32 pixels a side and
    separated by 1-pixel white gaps (none around the border), so the image is
    ``B*h + B-1`` by ``n*w + n-1`` pixels for ``n`` frames of ``h`` x ``w`` enlarged pixels.
    ``max_frames`` keeps at most that many frames, evenly spaced from the first to the last.
    Writes atomically; returns the path.
    """
    from PIL import Image

    pix = _video_pixels(x)
    b, f, h, w, c = pix.shape
    if max_frames is not None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        if f > max_frames:
            pix = pix[:, np.round(np.linspace(0, f - 1, max_frames)).astype(np.int64)]
    k = math.ceil(FILMSTRIP_MIN_SIDE / min(h, w))
    pix = pix.repeat(k, axis=2).repeat(k, axis=3)
    b, f, h, w, c = pix.shape
    sheet = np.full((b * (h + 1) - 1, f * (w + 1) - 1, c), 255, dtype=np.uint8)
    for i in range(b):
        for j in range(f):
            sheet[i * (h + 1) : i * (h + 1) + h, j * (w + 1) : j * (w + 1) + w] = pix[i, j]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(sheet[:, :, 0] if c == 1 else sheet).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def read_video(path: str | os.PathLike[str], channels: int | None = None) -> np.ndarray:
    """Decode the video file or frame folder ``path`` into uint8 (F, H, W, C).

    A folder's frames are its image files (Pillow-readable, not ``.gif``; hidden files skipped)
    sorted by name, so number them with leading zeros; they must all have one size. Video files
    (``VIDEO_EXTENSIONS``) decode with Pillow (GIF: every frame composed in full) or with imageio's
    PyAV plugin (the others). A GIF written by :func:`save_video` gets its merged identical frames
    back (each frame repeated by its display time over the recorded frame time); other GIFs give
    their stored frames.

    ``channels``: None keeps the decoded layout (1 for grey frame images, 3 for colour ones and for
    every video file), 1 converts to grey (ITU-R 601 luma, as Pillow's "L"), 3 to RGB. Transparency
    is composited on white, palettes are expanded, and 16-bit frames are scaled from 0..65535 to
    0..255 (Pillow's 32-bit "I" images count as 16-bit). Raises ValueError for other paths or
    empty results, and the decoders' own errors for unreadable files.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    path = Path(path)
    if path.is_dir():
        frames = _read_frame_folder(path)
    elif path.suffix.lower() in VIDEO_EXTENSIONS:
        if path.suffix.lower() == ".gif":
            frames = _read_gif(path)
        else:
            iio = _import_imageio()
            _import_av()
            frames = [_as_levels(a) for a in iio.imread(path, index=None, plugin="pyav")]
    else:
        valid = ", ".join(VIDEO_EXTENSIONS)
        raise ValueError(f"{path} is neither a folder of frame images nor a video file; valid suffixes: {valid}")
    if not frames:
        raise ValueError(f"{path} holds no frames")
    sizes = {f.shape[:2] for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"{path}: frames differ in size ({', '.join(f'{w}x{h}' for h, w in sorted(sizes))})")
    want = channels or (1 if all(f.shape[2] == 1 for f in frames) else 3)
    return np.stack([_to_channels(f, want) for f in frames])


def _read_frame_folder(folder: Path) -> list[np.ndarray]:
    from PIL import Image

    from .folder import image_extensions

    exts = image_extensions() - set(VIDEO_EXTENSIONS)
    visible = (p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    frames = []
    for p in sorted(p for p in visible if p.suffix.lower() in exts):
        with Image.open(p) as im:
            im.load()
            frames.append(_pillow_levels(im))
    return frames


def _read_gif(path: Path) -> list[np.ndarray]:
    """A GIF's frames (Pillow composes each full frame); frames that save_video merged are repeated back."""
    from PIL import Image, ImageSequence

    frames, durations = [], []
    with Image.open(path) as im:
        comment = im.info.get("comment", b"")
        for frame in ImageSequence.Iterator(im):
            frames.append(_pillow_levels(frame))
            durations.append(int(frame.info.get("duration") or 0))
    match = re.fullmatch(rb"difflab frame_ms=(\d+)", comment if isinstance(comment, bytes) else b"")
    if match is None:
        return frames
    base = int(match.group(1))
    return [f for f, d in zip(frames, durations, strict=True) for _ in range(max(1, round(d / base)))]


def _pillow_levels(im: Any) -> np.ndarray:
    """A Pillow image in any mode -> uint8 (H, W, C) with C in 1..4 (palettes and other modes expanded)."""
    if im.mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I", "F"):
        im = im.convert("RGBA" if "transparency" in im.info or im.mode in ("PA", "La") else "RGB")
    return _as_levels(np.asarray(im))


def _as_levels(a: np.ndarray) -> np.ndarray:
    """Any decoded frame (H, W) or (H, W, C) -> uint8 (H, W, C), 16-bit values scaled from 0..65535."""
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"cannot read a frame of shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype.kind in "ui":  # 16-bit data (uint16, or Pillow's int32 "I" mode holding 16-bit values)
        v = np.clip(a.astype(np.int64), 0, 65535)
        return ((v * 255 + 32767) // 65535).astype(np.uint8)
    if a.dtype.kind == "f":  # Pillow "F": values in [0, 1]
        return np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"cannot read frames of type {a.dtype}")


def _to_channels(a: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W, 1..4) -> uint8 (H, W, channels): alpha composited on white, grey by Pillow's luma."""
    c = a.shape[2]
    if c in (2, 4):  # grey + alpha or RGBA: composite on white
        alpha = a[:, :, -1:].astype(np.int32)
        a = ((a[:, :, :-1].astype(np.int32) * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
        c -= 1
    if c == channels:
        return a
    if channels == 3:
        return np.repeat(a, 3, axis=2)
    rgb = a.astype(np.int32)  # Pillow's "L" conversion: (19595 R + 38470 G + 7471 B + 2^15) >> 16
    grey = (rgb[:, :, 0] * 19595 + rgb[:, :, 1] * 38470 + rgb[:, :, 2] * 7471 + 0x8000) >> 16
    return grey.astype(np.uint8)[:, :, None]
