"""Classical lossless codecs beside the ARDM codec: PNG, WebP lossless, JPEG-XL lossless and gzip.

:func:`baseline_sizes` codes images one by one with each codec, checks that each decodes exactly,
and returns bytes per image and encode/decode times. ``benchmarks/ardm.py`` tabulates them against
the ARDM codec, and ``difflab app`` shows them beside an uploaded image's ARDM size. JPEG-XL needs
``imagecodecs`` (the ``ardm`` extra); without it JPEG-XL is left out.
"""

from __future__ import annotations

import gzip
import io
import time
from collections.abc import Sequence

import numpy as np


def baseline_sizes(
    images: np.ndarray | Sequence[np.ndarray],
) -> tuple[dict[str, list[int]], dict[str, dict[str, float]]]:
    """Bytes per image and encode/decode ms per image of PNG, WebP lossless, JPEG-XL lossless and gzip.

    ``images``: uint8 greyscale (N, H, W) or RGB (N, H, W, 3) arrays. A codec that does not give an
    image back exactly is a RuntimeError."""
    from PIL import Image

    def png(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def webp(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="WEBP", lossless=True, quality=100, method=6)
        return buf.getvalue()

    def pil_decode(b, a):
        return np.asarray(Image.open(io.BytesIO(b)).convert("L" if a.ndim == 2 else "RGB"))

    codecs = {"png": (png, pil_decode), "webp": (webp, pil_decode)}
    try:
        import imagecodecs

        codecs["jpegxl"] = (
            lambda a: imagecodecs.jpegxl_encode(a, lossless=True, effort=9),
            lambda b, a: imagecodecs.jpegxl_decode(b),
        )
    except ImportError:  # e.g. on the GPU machine: JPEG-XL is left out there
        pass
    codecs["gzip"] = (lambda a: gzip.compress(a.tobytes(), 9), lambda b, a: np.frombuffer(gzip.decompress(b), np.uint8))
    sizes, times = {}, {}
    for name, (enc, dec) in codecs.items():
        t0 = time.perf_counter()
        blobs = [enc(a) for a in images]
        t1 = time.perf_counter()
        for a, b in zip(images, blobs, strict=True):
            if not np.array_equal(np.asarray(dec(b, a)).reshape(a.shape), a):
                raise RuntimeError(f"{name} is not lossless here")
        t2 = time.perf_counter()
        sizes[name] = [len(b) for b in blobs]
        times[name] = {"encode_ms": 1000 * (t1 - t0) / len(images), "decode_ms": 1000 * (t2 - t1) / len(images)}
    return sizes, times
