"""``difflab unclip variations|interpolate|text-diff``: image manipulations with an unCLIP decoder.

- ``difflab unclip variations --decoder RUN [--sr RUN] IMAGE --n 8 --out variations.png``
- ``difflab unclip interpolate --decoder RUN IMAGE_A IMAGE_B --frames 5 --mode noise --out i.png``
- ``difflab unclip text-diff --decoder RUN IMAGE --from "a red bag ..." --to "a blue bag ..." --out t.png``

Text to image is ``difflab generate PROMPT --unclip PRIOR DECODER [SR ...]``. An IMAGE of another
size or mode is converted to RGB and resized to the size the decoder's CLIP embeddings were computed
at (its training images before shrinking), with a notice; a file
that is not an image is a one-line error. Each command writes one PNG grid (the source image(s)
first in the row).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ...argtypes import DEVICES, float_at_least, int_at_least, run_or_model


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decoder", required=True, metavar="RUN", type=run_or_model, help="an unclip-decoder run")
    p.add_argument(
        "--sr", nargs="+", default=[], metavar="RUN", type=run_or_model, help="super-resolution runs after the decoder"
    )
    p.add_argument("--out", required=True, metavar="PNG", help="the grid to write")
    p.add_argument("--guidance", type=float_at_least(0.0), metavar="W", help="decoder CFG weight (default: its own)")
    p.add_argument("--steps", type=int_at_least(1), help="decoder sampling steps (default: its own)")
    p.add_argument("--aug", type=float_at_least(0.0), help="super-resolution input noise level (default: its own)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="noise seed (default: %(default)s)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights (default: %(default)s)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="device (default: %(default)s)")


def add_unclip(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="{variations,interpolate,text-diff}")
    v = sub.add_parser("variations", help="decode an image's CLIP embedding with other noise",
                       description="Images that share IMAGE's CLIP image embedding.")  # fmt: skip
    _common(v)
    v.add_argument("image", metavar="IMAGE")
    v.add_argument("--n", type=int_at_least(1), default=8, help="variations (default: %(default)s)")
    i = sub.add_parser("interpolate", help="slerp between two images' embeddings (and decoder noise)",
                       description="Frames from IMAGE_A to IMAGE_B.")  # fmt: skip
    _common(i)
    i.add_argument("image", metavar="IMAGE_A")
    i.add_argument("image_b", metavar="IMAGE_B")
    i.add_argument("--frames", type=int_at_least(2), default=5, help="frames, both ends included (default: 5)")
    i.add_argument(
        "--mode", choices=("embedding", "noise"), default="embedding",
        help="embedding: one fixed noise; noise: also slerp the images' DDIM-inverted noise (default: %(default)s)",
    )  # fmt: skip
    t = sub.add_parser("text-diff", help="move an image's embedding toward a change of caption",
                       description="IMAGE changed as the captions --from -> --to differ.")  # fmt: skip
    _common(t)
    t.add_argument("image", metavar="IMAGE")
    t.add_argument("--from", dest="source", required=True, metavar="CAPTION", help="a caption of IMAGE")
    t.add_argument("--to", dest="target", required=True, metavar="CAPTION", help="the caption to move toward")
    t.add_argument("--amounts", type=float_at_least(0.0), nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="slerp amounts toward the text diff (default: 0 0.25 0.5 0.75 1)")  # fmt: skip


def read_image(path: str, shape: tuple[int, ...]) -> Any:
    """IMAGE as a (C, H, W) float tensor in [-1, 1] at ``shape`` (converted / resized with a notice)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            want = "RGB" if c == 3 else "L"
            if mode != want:
                print(f"difflab: note: {path}: {mode} image converted to {want}", file=sys.stderr)
                im = im.convert(want)
            arr = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read {path} as an image ({e.__class__.__name__})") from None
    x = torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], -1)).permute(2, 0, 1) / 127.5 - 1.0
    if tuple(x.shape[1:]) != (h, w):
        print(f"difflab: note: {path}: {tuple(x.shape[1:])} image resized to the model's {(h, w)}", file=sys.stderr)
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", antialias=True)[0]
    return x.clamp(-1.0, 1.0)


def run_unclip(args: argparse.Namespace) -> int:
    import torch

    from ...data import resize_images, save_grid
    from ...train.distributed import resolve_device
    from ...train.stage import upscale_for_grid
    from .pipeline import UnCLIP

    pipe = UnCLIP.load(None, args.decoder, *args.sr, weights=args.weights, device=resolve_device(args.device))
    options = {"guidance": args.guidance, "steps": args.steps, "aug": args.aug, "seed": args.seed}
    image = read_image(args.image, pipe.source_shape)
    shown = resize_images(image[None], pipe.image_shape[-2:])  # the source in the grid, at the output size
    t0 = time.perf_counter()
    if args.action == "variations":
        out = torch.cat([shown, pipe.variations(image, args.n, **options)])
    elif args.action == "interpolate":
        other = read_image(args.image_b, pipe.source_shape)
        out = pipe.interpolate(image, other, args.frames, mode=args.mode, **options)
        out = torch.cat([shown, out, resize_images(other[None], pipe.image_shape[-2:])])
    else:
        out = torch.cat([shown, pipe.text_diff(image, args.source, args.target, args.amounts, **options)])
    seconds = time.perf_counter() - t0
    path = save_grid(upscale_for_grid(out.clamp(-1, 1)), Path(args.out), nrow=len(out))
    print(f"wrote {path} ({len(out) - 1} image(s) after the source, {seconds:.1f} s)")
    return 0
