"""The Compress tab: lossless ARDM coding of an uploaded image, beside PNG and JPEG-XL.

:func:`compress_image` reads the image as ``difflab compress`` does (:func:`~difflab.methods.ardm.cli.read_png`:
levels, 1- or 8-bit), codes it with :func:`~difflab.methods.ardm.codec.compress` (one thread, as the command
does, so encoder and decoder compute identical probabilities), decodes the result with
:func:`~difflab.methods.ardm.codec.decompress`, checks that every pixel came back, and sizes the same image
with the classical codecs of :func:`~difflab.methods.ardm.baselines.baseline_sizes`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import limits as check
from .limits import DEFAULT_LIMITS, AppError, Limits
from .models import Entry, Models
from .outputs import job_folder


@dataclass
class Coded:
    """What coding one image gave: sizes in bytes, bits per pixel, the decoded image and the files."""

    width: int
    height: int
    channels: int
    ardm_bytes: int
    payload_bits: int
    bits_per_pixel: float  # the whole .ardm file (header included) over width * height
    payload_bits_per_pixel: float  # the image's rANS payload alone
    equal: bool  # the decoded pixels equal the input's, every one
    calls: int  # network calls per image
    seconds: dict[str, float]  # encode, decode
    sizes: dict[str, int] = field(default_factory=dict)  # png, jpegxl (and webp, gzip) bytes
    input_png: Path | None = None  # the input as read, levels stretched to 0..255 for viewing
    decoded_png: Path | None = None  # the decoded image, likewise for viewing
    decoded_exact: Path | None = None  # the decoded image as difflab decompress writes it (exact levels)
    ardm_file: Path | None = None

    def bpp(self, codec: str) -> float | None:
        return 8 * self.sizes[codec] / (self.width * self.height) if codec in self.sizes else None

    @property
    def summary(self) -> str:
        same = (
            "yes: every pixel of the decoded image equals the input" if self.equal else "NO: the decoded image differs"
        )
        return (
            f"{self.width}x{self.height} image, {self.calls} network calls: ARDM {self.ardm_bytes} bytes "
            f"({self.bits_per_pixel:.3f} bits per pixel; payload {self.payload_bits_per_pixel:.3f}), encode "
            f"{self.seconds['encode']:.2f} s, decode {self.seconds['decode']:.2f} s; lossless: {same}"
        )


VIEW_SIDE = 224  # the images shown are enlarged (nearest neighbour) to at least this many pixels a side


def _viewable(levels: Any, k: int, path: Path) -> Path:
    """Write (C, H, W) levels 0..k-1 stretched to 0..255 (so that a 17-level digit is visible) and enlarged
    by a whole factor to about :data:`VIEW_SIDE` pixels, for the page only."""
    import numpy as np
    from PIL import Image

    arr = levels.numpy().astype(np.float64) * (255.0 / max(k - 1, 1))
    factor = max(1, -(-VIEW_SIDE // max(arr.shape[1:])))
    arr = np.round(arr).astype(np.uint8).repeat(factor, axis=1).repeat(factor, axis=2)
    Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)).save(path)
    return path


def read_image(path: Path, model: Any, limits: Limits, name: str = "image") -> tuple[Any, int]:
    """The uploaded image as (uint8 levels (C, H, W), bits), checked against the limits and the model."""
    from ..methods.ardm.cli import read_png

    w, h = check.image_size(name, path, limits)
    try:
        img, bits = read_png(path, model.shape[0])
    except ValueError as e:  # its messages name the file by its path on the server: show its name
        raise AppError(f"{name}: {check.one_line(e).replace(str(path), path.name)}") from None
    c, mh, mw = model.shape
    if (h, w) != (mh, mw):
        kind = "greyscale" if c == 1 else f"{c}-channel"
        raise AppError(f"{name}: {path.name} is {w}x{h} pixels; this model codes {mw}x{mh} {kind} images")
    if int(img.max()) >= model.levels:
        raise AppError(
            f"{name}: pixel value {int(img.max())} is above this model's {model.levels - 1} (it codes "
            f"{model.levels} levels); e.g. 8x8 digits hold the values 0..16"
        )
    return img, bits


def compress_image(
    models: Models,
    entry: Entry,
    image: Any,
    *,
    calls: Any = None,
    out: str | Path,
    limits: Limits = DEFAULT_LIMITS,
) -> Coded:
    """Code the image file ``image`` with the ARDM ``entry`` (``calls`` network calls per image, None: all
    of them), decode it again and compare; write the files under ``out/compress/``."""
    import numpy as np
    import torch

    from ..methods.ardm.baselines import baseline_sizes
    from ..methods.ardm.codec import compress, decompress, payload_bits

    path = check.upload("image", image, limits.image_bytes)
    model = models.ardm(entry)
    if model.kind != "image":
        raise AppError(f"{entry.name}: a text ARDM cannot code images")
    full = model.D * model.num_stages
    budget = check.whole("network calls", calls, model.num_stages, 2**31, optional=True)  # over D * stages: all
    img, bits = read_image(path, model, limits)
    plan = "full" if budget is None or budget >= full else ("dp" if model.step_losses else "uniform")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as difflab compress / decompress: the same reduction order on both sides
    try:
        t0 = time.perf_counter()
        data = compress(model, img[None], plan=plan, budget=None if plan == "full" else budget, group=1, bits=bits)
        t1 = time.perf_counter()
        decoded = decompress(model, data)[0]
        t2 = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    c, h, w = img.shape
    arr = img.numpy()
    arr = arr[0] if c == 1 else arr.transpose(1, 2, 0)
    sizes, _ = baseline_sizes(np.ascontiguousarray(arr)[None])
    folder = job_folder(out, "compress")
    (folder / "image.ardm").write_bytes(data)
    from PIL import Image

    exact = decoded.numpy()
    exact = exact[0] if c == 1 else exact.transpose(1, 2, 0)
    Image.fromarray(exact.astype(bool) if bits == 1 else exact).save(folder / "decoded.png")  # as decompress writes
    k = 2 if bits == 1 else model.levels
    return Coded(
        width=w, height=h, channels=c, ardm_bytes=len(data), payload_bits=payload_bits(data)[0],
        bits_per_pixel=8 * len(data) / (w * h), payload_bits_per_pixel=payload_bits(data)[0] / (w * h),
        equal=bool(torch.equal(decoded, img)), calls=budget if plan != "full" else full,
        seconds={"encode": t1 - t0, "decode": t2 - t1}, sizes={k2: v[0] for k2, v in sizes.items()},
        input_png=_viewable(img, k, folder / "input-view.png"),
        decoded_png=_viewable(decoded, k, folder / "decoded-view.png"),
        decoded_exact=folder / "decoded.png", ardm_file=folder / "image.ardm",
    )  # fmt: skip
