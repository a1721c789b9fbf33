"""The Video tab: sample clips from a video stage, or extend a clip (uploaded, or sampled first).

:func:`make_video` does what ``difflab video sample`` and ``difflab video extend`` do
(:meth:`LoadedStage.sample <difflab.train.stage.LoadedStage.sample>`,
:func:`~difflab.methods.video.sampling.extend` with reconstruction guidance,
:func:`~difflab.methods.video.cli.read_input`) and writes an MP4 and a filmstrip PNG. No pretrained video
model ships with difflab yet: the app takes video runs with ``--video RUN``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import limits as check
from .limits import DEFAULT_LIMITS, AppError, Limits
from .models import Entry, Models
from .outputs import job_folder
from .sample import MAX_SEED, parse_labels

ACTIONS = ("sample", "extend")
VIDEO_SUFFIXES = (".gif", ".mp4", ".webm", ".mov", ".avi", ".mkv")
MAX_CLIPS = 4
FPS = 8


@dataclass
class Clip:
    """The video (MP4), its frames as a filmstrip PNG, the sampling wall time and a summary."""

    video: Path
    filmstrip: Path
    seconds: float
    summary: str


def _probe(path: Path, limits: Limits) -> None:
    """Refuse a video file that is not one, or has more frames or larger frames than the limits allow,
    before decoding it."""
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise AppError(f"video: {path.name}: upload a video file ({', '.join(VIDEO_SUFFIXES)})")
    try:
        if path.suffix.lower() == ".gif":
            from PIL import Image

            with Image.open(path) as im:
                frames, (w, h) = getattr(im, "n_frames", 1), im.size
        else:
            import av

            with av.open(str(path)) as c:
                if not c.streams.video:
                    raise AppError(f"video: {path.name} holds no video stream")
                s = c.streams.video[0]
                frames, w, h = s.frames, s.codec_context.width, s.codec_context.height
    except AppError:
        raise
    except Exception as e:  # av.error.*, PIL errors: not a readable video
        raise AppError(f"video: {path.name} is not a video file this app can read ({type(e).__name__})") from None
    if frames > limits.frames:
        raise AppError(f"video: {path.name} has {frames} frames, over the limit of {limits.frames}")
    if max(w, h) > limits.image_side:
        raise AppError(f"video: {path.name} is {w}x{h} pixels, over the limit of {limits.image_side}")


def make_video(
    models: Models,
    entry: Entry,
    *,
    action: str = "sample",
    n: Any = 1,
    frames: Any = None,
    video: Any = None,
    label: Any = "",
    steps: Any = None,
    seed: Any = 0,
    out: str | Path,
    limits: Limits = DEFAULT_LIMITS,
    progress: bool = False,
) -> Clip:
    """``action`` "sample": ``n`` clips of the stage's length; "extend": the uploaded ``video`` (or a
    sampled clip) extended to ``frames`` frames. Files under ``out/video/``."""
    from ..data import save_filmstrip, save_video
    from ..methods.video.cli import read_input
    from ..methods.video.sampling import clip_shape, extend

    if action not in ACTIONS:
        raise AppError(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
    count = check.whole("number of clips", n, 1, min(MAX_CLIPS, limits.images))
    n_steps = check.whole("steps", steps, 1, limits.steps, optional=True)
    seed = check.whole("seed", seed, 0, MAX_SEED, optional=True) or 0
    label = check.text("label", label, limits.text_chars)
    stage = models.stage(entry)
    shape = clip_shape(stage)
    classes = int(stage.meta.get("num_classes") or 0) if "class" in stage.conditions else 0
    options = {
        "steps": n_steps,
        "progress": progress,
        "labels": parse_labels(label, classes, count) if classes else None,
    }
    note = ""
    t0 = time.perf_counter()
    if action == "sample":
        clip = stage.sample(count, seed=seed, **options)
    else:
        length = check.whole("frames", frames, shape[1] + 1, limits.frames)
        if video is not None:
            path = check.upload("video", video, limits.video_bytes)
            _probe(path, limits)
            try:
                given = read_input(str(path), shape).expand(count, -1, -1, -1, -1)
            except (ValueError, OSError) as e:
                raise AppError(f"video: {check.one_line(e).replace(str(path), path.name)}") from None
            if given.shape[2] >= length:
                raise AppError(f"frames: the video already has {given.shape[2]} frames; ask for more than that")
        else:
            given = stage.sample(count, seed=seed + 10_000, **options)
        have, stride = given.shape[2], shape[1] - shape[1] // 2  # each clip adds stride frames (half a clip of context)
        reachable = have + math.ceil((length - have) / stride) * stride
        if reachable != length:
            reachable -= stride if reachable > limits.frames else 0
            note = f" (asked for {length}: each new clip adds {stride} frames, so {reachable})"
            length = reachable
        clip = extend(stage, given, length, method="reconstruction", weight=2.0, seed=seed, **options)
    seconds = time.perf_counter() - t0
    clip = clip.clamp(-1, 1)
    folder = job_folder(out, "video")
    mp4 = save_video(clip, folder / "video.mp4", fps=FPS)
    strip = save_filmstrip(clip, folder / "frames.png", max_frames=16)
    c, f, h, w = clip.shape[1:]
    summary = f"{count} clip(s) of {f} frames{note} ({w}x{h}, {FPS} fps), {action}: {seconds:.2f} s"
    return Clip(mp4, strip, seconds, summary)
