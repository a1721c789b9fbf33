"""The ARDM subcommands of ``difflab`` (Hoogeboom et al. 2022, "Autoregressive Diffusion Models").

``ardm-train``, ``ardm-eval``, ``ardm-export``, ``compress`` and ``decompress``: argument parsers
and run functions for :data:`difflab.cli.COMMANDS`. torch is imported inside the run functions
only, so ``difflab --help`` stays fast.

PNG files hold the levels themselves: pixel value ``k`` is level ``k`` (0..255 for Fashion-MNIST,
0..16 for the 8x8 digits); greyscale PNGs are 1-channel images, RGB ones 3-channel. The codec is
lossless in pixel values and keeps the bit depth: 8-bit greyscale / RGB images come back as 8-bit
PNGs, 1-bit images (levels 0 and 1) as 1-bit PNGs, palette images as RGB PNGs of the same colours.
Images of other bit depths (2- and 4-bit greyscale, 16-bit, 32-bit integer or float) are refused
with a one-line error: the ARDM models at most 256 levels, so they could not come back exactly.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from ...argtypes import DEVICES, add_train_arguments, int_at_least, run_or_model

_positive_int = int_at_least(1)


def _int_below(lo: int, end: int) -> Any:
    """An argparse type: an integer in lo..end-1 (the range of a header field)."""
    first = int_at_least(lo)

    def parse(text: str) -> int:
        v = first(text)
        if v >= end:
            raise argparse.ArgumentTypeError(f"must be an integer <= {end - 1} (a header field), got {v}")
        return v

    parse.__name__ = f"integer in {lo}..{end - 1}"
    return parse


# -- ardm-train ------------------------------------------------------------------------------
def add_train(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p, "configs/ardm-digits.yaml")


def run_train(args: argparse.Namespace) -> int:
    from ...config import ConfigKeyError
    from ...train.config import config_from_args
    from .train import train_ardm

    cfg, run_dir = config_from_args(args)
    try:
        return train_ardm(cfg, run_dir, resume=args.resume, time_limit=args.time_limit).exit_code
    except ConfigKeyError as e:  # e.g. model.unet.channels=abc, found when the model section is checked
        raise e.located(args.config, args.overrides) from None


# -- ardm-eval -------------------------------------------------------------------------------
def add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run", metavar="RUN", type=run_or_model, help="ARDM run folder (or its checkpoint / an exported folder)"
    )
    p.add_argument("--split", choices=("train", "test"), default="test", help="data split (default: %(default)s)")
    p.add_argument("--orders", type=_positive_int, default=4, help="random orders per image (default: %(default)s)")
    p.add_argument("--images", type=_positive_int, help="evaluate the first N images only")
    p.add_argument(
        "--budgets", type=_positive_int, nargs="*", metavar="K", help="also estimate per-step losses and the NLL "
        "with K network calls (DP plan and uniform segments); the losses are saved as ardm_steps.json"
    )  # fmt: skip
    p.add_argument("--parallel-images", type=_positive_int, default=1000, help="images for --budgets")
    p.add_argument("--parallel-orders", type=_positive_int, default=4, help="draws per image for --budgets")
    p.add_argument("--device", choices=DEVICES, default="auto", help="device (default: %(default)s)")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="images per network call")
    p.add_argument("--out", metavar="JSON", help="also write the result to this file")


def run_eval(args: argparse.Namespace) -> int:
    from ...train.distributed import resolve_device
    from .train import evaluate_ardm

    res = evaluate_ardm(
        args.run, split=args.split, orders=args.orders, images=args.images, budgets=args.budgets,
        parallel_images=args.parallel_images, parallel_orders=args.parallel_orders,
        device=resolve_device(args.device), batch_size=args.batch_size,
    )  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


# -- ardm-export -----------------------------------------------------------------------------
def add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="ARDM run folder")
    p.add_argument("out", metavar="DIR", help="folder to write (EMA weights, config, per-step losses)")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights (default: bfloat16, half the size)")


def run_export(args: argparse.Namespace) -> int:
    from .train import export_ardm

    out = export_ardm(args.run, args.out, dtype="fp32" if args.fp32 else "bf16")
    print(f"wrote {out}")
    return 0


# -- compress / decompress -------------------------------------------------------------------
def add_compress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", metavar="MODEL", type=run_or_model, help="ARDM run folder, exported model folder or pretrained:NAME"
    )
    p.add_argument("inputs", nargs="+", metavar="IN.png", help="images to code (each coded on its own)")
    p.add_argument("-o", "--out", required=True, metavar="OUT.ardm", help="compressed file to write")
    p.add_argument("--budget", type=_int_below(1, 2**32), help="network calls per image (parallel plan; default: all)")
    p.add_argument("--plan", choices=("dp", "uniform"), default="dp", help="plan under --budget (default: %(default)s)")
    p.add_argument(
        "--seed", type=_int_below(0, 2**32), default=0, help="seed of the coding order (stored in the header)"
    )
    p.add_argument(
        "--group", type=_int_below(1, 2**16), default=64, help="images per network call (default: %(default)s)"
    )


def _sample_bits(im: Any) -> int | None:
    """Bits per sample that Pillow decodes ``im`` from (``I;16B`` -> 16, ``L;2`` -> 2), if its raw mode says."""
    try:
        args = im.tile[0][3]
    except (IndexError, TypeError):
        return None
    raw = args[0] if isinstance(args, tuple) and args else args
    m = re.search(r";(\d+)", raw) if isinstance(raw, str) else None
    return int(m.group(1)) if m else None


def read_png(path: str | Path, channels: int) -> tuple[Any, int]:
    """A PNG as (uint8 tensor (C, H, W) of levels, bits): ``bits`` 1 for a 1-bit image (levels 0 and
    1), else 8. A mode that is not ``channels`` channels, or a bit depth that the codec cannot give
    back exactly (16-bit, 32-bit, float, 2- or 4-bit greyscale), is a one-line error."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            mode, depth = im.mode, _sample_bits(im)
            if mode == "F" or mode.startswith("I") or (depth or 8) > 8 or (mode == "L" and depth in (2, 4)):
                what = {"F": "32-bit floating-point"}.get(mode) or (
                    "32-bit integer" if mode == "I" and depth != 16 else f"{depth}-bit"
                )
                raise ValueError(
                    f"{p}: a {what} image (mode {mode}); the codec takes 1-bit and 8-bit images only (the ARDM "
                    "models at most 256 levels, so other depths would not come back exactly): convert it to 8 bits"
                )
            if mode not in ("L", "RGB", "P", "RGBA", "LA", "1"):
                raise ValueError(f"{p}: unsupported image mode {mode}")
            have = {"L": 1, "1": 1, "LA": 2, "RGB": 3, "RGBA": 4, "P": 3}[mode]
            if have != channels:
                raise ValueError(f"{p}: a {have}-channel image ({mode}); the model codes {channels}-channel images")
            if mode == "1":  # pixel values 0 and 1, not Pillow's 0 and 255 of convert("L")
                arr = np.asarray(im, dtype=np.uint8)
            else:
                arr = np.asarray(im.convert("L" if channels == 1 else "RGB" if channels == 3 else mode))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{p}: not a readable image ({e})") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(arr.copy()), 1 if mode == "1" else 8


def run_compress(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)  # the same reduction order on encoder and decoder
    from .. import load
    from .codec import compress

    model = load(args.model, method="ardm")
    if model.kind != "image":
        raise ValueError(f"{args.model}: a text ARDM cannot code images")
    imgs, depths = [], {}
    for path in args.inputs:
        img, bits = read_png(path, model.shape[0])
        depths.setdefault(bits, path)
        if len(depths) > 1:
            raise ValueError(
                f"{depths[1]} is a 1-bit image and {depths[8]} an 8-bit one: one file holds images of one bit "
                "depth (so that each comes back as it was), compress them into separate files"
            )
        if tuple(img.shape) != tuple(model.shape):
            c, h, w = model.shape
            raise ValueError(f"{path}: image is {img.shape[2]}x{img.shape[1]}, the model codes {w}x{h} images")
        if int(img.max()) >= model.levels:
            raise ValueError(f"{path}: pixel value {int(img.max())} is above the model's {model.levels - 1}")
        imgs.append(img)
    t0 = time.perf_counter()
    data = compress(
        model, torch.stack(imgs), plan=args.plan if args.budget else "full", budget=args.budget, seed=args.seed,
        group=args.group, bits=next(iter(depths)),
    )  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(data)
    dims = len(imgs) * model.D
    print(
        f"wrote {args.out}: {len(imgs)} image(s), {len(data):,} bytes, {8 * len(data) / dims:.3f} bits per dimension, "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return 0


def add_decompress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        metavar="MODEL",
        type=run_or_model,
        help="the ARDM model (folder or pretrained:NAME) that coded the file",
    )
    p.add_argument("input", metavar="IN.ardm", help="compressed file")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="folder for the decoded PNGs (00000.png ...)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="first delete the decoded PNGs (00000.png ...) of an earlier run in DIR",
    )


_DECODED = re.compile(r"\d{5,}\.png")  # the names run_decompress writes


def _earlier_output(out: Path) -> list[Path]:
    """The PNGs in ``out`` named like decoder output (00000.png ...), sorted."""
    if not out.is_dir():
        return []
    return sorted(f for f in out.iterdir() if _DECODED.fullmatch(f.name) and f.is_file())


def run_decompress(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    from PIL import Image

    from .. import load
    from .codec import decompress, read_header

    src = Path(args.input)
    if not src.is_file():
        raise FileNotFoundError(f"compressed file not found: {src}")
    out = Path(args.out)
    old = _earlier_output(out)
    if old and not args.overwrite:
        names = ", ".join(f.name for f in old[:3]) + (f" ... {old[-1].name}" if len(old) > 3 else "")
        raise ValueError(
            f"{out} already holds {len(old)} decoded image(s) ({names}) that would mix with this file's: pass "
            "--overwrite to delete them first, or choose an empty folder"
        )
    model = load(args.model, method="ardm")
    if model.kind != "image":
        raise ValueError(f"{args.model}: a text ARDM cannot decode images")
    t0 = time.perf_counter()
    data = src.read_bytes()
    x = decompress(model, data)
    bits = read_header(data)["bits"]
    out.mkdir(parents=True, exist_ok=True)
    for f in old:  # only with --overwrite, and only once the file has decoded
        f.unlink()
    for i, img in enumerate(x.numpy()):
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        Image.fromarray(arr.astype(bool) if bits == 1 else arr).save(out / f"{i:05d}.png")
    print(f"wrote {len(x)} image(s) to {out} in {time.perf_counter() - t0:.1f} s", file=sys.stdout)
    return 0
