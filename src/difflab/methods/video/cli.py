"""``difflab video sample|extend|interpolate``: clips and long videos from a video stage (torch lazily).

- ``difflab video sample RUN --n 4 --out clips.gif``: clips of the stage's length
- ``difflab video extend RUN [INPUT] --frames 64 --method reconstruction --out long.mp4``
- ``difflab video interpolate RUN [INPUT] --factor 4 --method reconstruction --out smooth.gif``

INPUT is a video file (GIF, MP4, ...) or a folder of frames; without it a clip is sampled first
(for ``interpolate``: every ``factor``-th frame of it). ``--filmstrip PNG`` also writes the frames
as a picture, one row per video.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ...argtypes import DEVICES, SAMPLERS, float_at_least, int_at_least, run_or_model

ACTIONS = ("sample", "extend", "interpolate")


def _common(p: argparse.ArgumentParser, n_default: int) -> None:
    p.add_argument(
        "run", metavar="RUN", type=run_or_model, help="a video stage: run folder of 'difflab train' with model.dims=3"
    )
    p.add_argument("--out", required=True, metavar="FILE", help="output video: .gif or .mp4")
    p.add_argument("--filmstrip", metavar="PNG", help="also write the frames as a PNG, one row per video")
    p.add_argument("--fps", type=int_at_least(1), default=8, help="frames per second of the output (default: 8)")
    p.add_argument("--n", type=int_at_least(1), default=n_default, help="videos (default: %(default)s)")
    p.add_argument("--labels", nargs="+", metavar="Y", help="class labels to cycle through (class-conditional)")
    p.add_argument("--guidance", type=float_at_least(0.0), metavar="W", help="CFG weight (default: sample.guidance)")
    p.add_argument("--sampler", choices=SAMPLERS, help="sampler (default: the run's sample.sampler)")
    p.add_argument("--steps", type=int_at_least(1), help="sampling steps (default: the run's sample.steps)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="noise seed (default: %(default)s)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights (default: %(default)s)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="device (default: %(default)s)")
    p.add_argument("--progress", action="store_true", help="show progress bars")


def _known_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", nargs="?", metavar="INPUT", help="video file or folder of frames (default: sample one)")
    p.add_argument(
        "--method", choices=("reconstruction", "replacement"), default="reconstruction",
        help="how generated frames are made to fit the known ones (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--weight", type=float_at_least(0.0), default=2.0, help="reconstruction guidance weight (default: 2)"
    )


def add_video(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="{sample,extend,interpolate}")
    s = sub.add_parser("sample", help="sample clips of the stage's length", description="Sample clips.")
    _common(s, 4)
    e = sub.add_parser(
        "extend", help="extend a video autoregressively",
        description="Extend INPUT (or a sampled clip) clip by clip, each new clip conditioned on the last "
        "--context frames so far.",
    )  # fmt: skip
    _common(e, 1)
    _known_options(e)
    e.add_argument("--frames", type=int_at_least(2), required=True, help="length of the result in frames")
    e.add_argument("--context", type=int_at_least(1), help="known frames per new clip (default: half a clip)")
    i = sub.add_parser(
        "interpolate", help="raise a video's frame rate by generating the frames in between",
        description="Interpolate INPUT (or every FACTOR-th frame of a sampled clip) to FACTOR times its frame rate.",
    )  # fmt: skip
    _common(i, 1)
    _known_options(i)
    i.add_argument("--factor", type=int_at_least(2), default=4, help="frame-rate factor (default: %(default)s)")


def _labels(args: argparse.Namespace, stage: Any, n: int) -> Any:
    import torch

    if not args.labels:
        return None
    if not int(stage.meta.get("num_classes") or 0):
        raise ValueError("--labels given but this model is not class-conditional")
    labels = [int(v) for part in args.labels for v in str(part).split(",") if v.strip()]
    return torch.tensor(labels, dtype=torch.long).repeat(n // len(labels) + 1)[:n]


def read_input(path: str, shape: tuple[int, ...]) -> Any:
    """INPUT as (1, C, F, H, W) in [-1, 1] at the stage's channels and size (resized with a notice)."""
    import torch
    import torch.nn.functional as F

    from ...data import read_video

    c, _, h, w = shape
    frames = read_video(path, channels=c)  # uint8 (F, H, W, C)
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)
    if tuple(x.shape[2:]) != (h, w):
        print(f"difflab: note: {path}: frames of {tuple(x.shape[2:])} resized to the model's {(h, w)}", file=sys.stderr)
        x = F.interpolate(x.transpose(0, 1), size=(h, w), mode="area").transpose(0, 1)
    return x[None]


def run_video(args: argparse.Namespace) -> int:
    from ...data import save_filmstrip, save_video
    from ...methods import load
    from ...train.distributed import resolve_device
    from .sampling import clip_shape, extend, interpolate

    if Path(args.out).suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"--out must end in .gif or .mp4, got {args.out!r}")
    stage = load(args.run, weights=args.weights, device=resolve_device(args.device), method="diffusion")
    shape = clip_shape(stage)
    options = {"sampler": args.sampler, "steps": args.steps, "guidance": args.guidance, "progress": args.progress}
    options["labels"] = _labels(args, stage, args.n)
    t0 = time.perf_counter()
    if args.action == "sample":
        video = stage.sample(args.n, seed=args.seed, **options)
    else:
        if args.input:
            given = read_input(args.input, shape).expand(args.n, -1, -1, -1, -1)
        else:
            given = stage.sample(args.n, seed=args.seed + 10_000, **options)
        known = dict(method=args.method, weight=args.weight, seed=args.seed, **options)
        if args.action == "extend":
            video = extend(stage, given, args.frames, context=args.context, **known)
        else:
            if not args.input:
                given = given[:, :, :: args.factor]
            video = interpolate(stage, given, args.factor, **known)
    seconds = time.perf_counter() - t0
    video = video.clamp(-1, 1)
    print(f"wrote {save_video(video, args.out, fps=args.fps)} ({tuple(video.shape)}, {seconds:.1f} s)")
    if args.filmstrip:
        print(f"wrote {save_filmstrip(video, args.filmstrip)}")
    return 0
