"""Long videos from a model of short clips (Ho et al. 2022, "Video Diffusion Models", section 3.1).

A video stage is an ordinary diffusion stage whose samples are clips ``(C, F, H, W)`` (a U-Net with
``dims: 3``). Two ways to go past its ``F`` frames, both by sampling clips whose *known* frames are
fixed and whose other frames are generated to fit them:

- :func:`extend`: autoregressive extension. Each new clip keeps the last ``context`` frames of the
  video so far as known frames and generates ``F - context`` new ones after them.
- :func:`interpolate`: temporal up-sampling. A video at 1/``factor`` of the frame rate gives every
  ``factor``-th frame of a clip; the frames in between are generated.

The known frames enter the sampler through :func:`difflab.diffusion.reconstruction_guidance` (the
paper's method: the generated frames are pulled towards agreement with the known ones by the
gradient of the reconstruction error, weight ``weight``) or :func:`difflab.diffusion.replacement`
(the known frames are only substituted into the noisy input). :func:`linear_interpolate` is the
no-model baseline of interpolation. Every sampler (``ddpm``, ``ddim``, ``dpmpp_2m``, ``heun``) and
every other option of :meth:`LoadedStage.sample` (labels, guidance, steps ...) work with both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

METHODS = ("reconstruction", "replacement")


def clip_shape(stage: Any) -> tuple[int, int, int, int]:
    """``(C, F, H, W)`` of the clips ``stage`` samples; a ValueError for a stage that is not a video one."""
    shape = tuple(stage.image_shape)
    if len(shape) != 4:
        raise ValueError(f"this stage samples {shape} arrays, not video clips (C, F, H, W): train with model.dims=3")
    return shape  # type: ignore[return-value]


def _check_video(video: Tensor, shape: tuple[int, ...], what: str) -> Tensor:
    if video.ndim == 4:
        video = video[None]
    c, _, h, w = shape
    if video.ndim != 5 or video.shape[1] != c or tuple(video.shape[3:]) != (h, w):
        raise ValueError(
            f"{what} must be (B, {c}, frames, {h}, {w}) or ({c}, frames, {h}, {w}) like the model's clips, "
            f"got {tuple(video.shape)}"
        )
    return video.float()


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def extension_lengths(video_frames: int, clip_frames: int, context: int, upto: int = 8) -> list[int]:
    """The lengths :func:`extend` can reach from ``video_frames``: the first ``upto`` of them."""
    stride = clip_frames - context
    return [video_frames + k * stride for k in range(1, upto + 1)]


def extend(
    stage: Any,
    video: Tensor,
    frames: int,
    *,
    context: int | None = None,
    method: str = "reconstruction",
    weight: float = 2.0,
    seed: int = 0,
    progress: bool = False,
    **options: Any,
) -> Tensor:
    """``video`` (B, C, F0, H, W) in [-1, 1] extended to ``frames`` frames, one clip at a time.

    Each clip of the stage's ``F`` frames holds the last ``context`` frames so far (default ``F //
    2``) as known frames and adds ``F - context`` new ones, so ``frames - F0`` must be a multiple of
    ``F - context`` (a ValueError lists the lengths that are). ``method`` reconstruction (guidance
    weight ``weight``) or replacement; ``options`` go to :meth:`LoadedStage.sample` (labels,
    guidance, sampler, steps ...). The first ``F0`` frames of the result are ``video``'s.
    """
    _check_method(method)
    shape = clip_shape(stage)
    c, f, h, w = shape
    video = _check_video(video, shape, "video")
    context = f // 2 if context is None else int(context)
    if not 1 <= context < f:
        raise ValueError(f"context must be in 1..{f - 1} (the model's clips have {f} frames), got {context}")
    have = video.shape[2]
    if have < context:
        raise ValueError(f"the video has {have} frames; extending it with context {context} needs at least {context}")
    stride = f - context
    if frames <= have or (frames - have) % stride:
        raise ValueError(
            f"cannot extend {have} frames to {frames}: each clip adds {stride} frames ({f} frames less {context} of "
            f"context), so the possible lengths are {', '.join(map(str, extension_lengths(have, f, context)))}, ..."
        )
    b = video.shape[0]
    mask = torch.zeros(1, 1, f, 1, 1, dtype=torch.bool)
    mask[:, :, :context] = True
    out = [video]
    total, rounds = have, (frames - have) // stride
    bar = _bar(rounds, "extend", progress)
    for r in range(rounds):
        known = torch.zeros(b, c, f, h, w)
        known[:, :, :context] = torch.cat(out, dim=2)[:, :, -context:]
        x = stage.sample(b, known=known, known_mask=mask, known_method=method, known_weight=weight,
                         seed=seed + r, **options)  # fmt: skip
        out.append(x[:, :, context:])
        total += stride
        bar.update(1)
    bar.close()
    return torch.cat(out, dim=2)


def interpolation_factors(clip_frames: int) -> list[int]:
    """The frame-rate factors :func:`interpolate` serves with clips of ``clip_frames`` frames."""
    return list(range(2, clip_frames))


def interpolate(
    stage: Any,
    video: Tensor,
    factor: int = 4,
    *,
    method: str = "reconstruction",
    weight: float = 2.0,
    seed: int = 0,
    progress: bool = False,
    **options: Any,
) -> Tensor:
    """``video`` (B, C, L, H, W) at 1/``factor`` of the frame rate -> (B, C, (L - 1) factor + 1, H, W).

    Each clip of the stage's ``F`` frames takes ``k = (F - 1) // factor + 1`` consecutive frames of
    ``video`` as known frames at positions 0, factor, 2 factor, ... and generates the frames in
    between; consecutive clips share one known frame. Frames of a clip past its last known one are
    not kept. Input frames are kept exactly. ``factor`` must be in 2..F-1. ``method``, ``weight``
    and ``options`` as for :func:`extend`.
    """
    _check_method(method)
    shape = clip_shape(stage)
    c, f, h, w = shape
    video = _check_video(video, shape, "video")
    if factor not in interpolation_factors(f):
        raise ValueError(f"factor must be an integer in 2..{f - 1} for this model's {f}-frame clips, got {factor}")
    b, low = video.shape[0], video.shape[2]
    if low < 2:
        raise ValueError(f"interpolation needs a video of at least 2 frames, got {low}")
    k = (f - 1) // factor + 1  # known frames per clip
    total = (low - 1) * factor + 1
    out = torch.zeros(b, c, total, h, w)
    starts = list(range(0, low - 1, k - 1))
    bar = _bar(len(starts), "interpolate", progress)
    for r, j0 in enumerate(starts):
        used = min(k, low - j0)
        known = torch.zeros(b, c, f, h, w)
        mask = torch.zeros(1, 1, f, 1, 1, dtype=torch.bool)
        known[:, :, : used * factor : factor] = video[:, :, j0 : j0 + used]
        mask[:, :, : used * factor : factor] = True
        x = stage.sample(b, known=known, known_mask=mask, known_method=method, known_weight=weight,
                         seed=seed + r, **options)  # fmt: skip
        span = (used - 1) * factor + 1
        out[:, :, j0 * factor : j0 * factor + span] = x[:, :, :span]
        bar.update(1)
    bar.close()
    out[:, :, ::factor] = video  # the given frames exactly
    return out


def linear_interpolate(video: Tensor, factor: int) -> Tensor:
    """The baseline of :func:`interpolate`: each in-between frame a linear blend of its two neighbours."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    squeeze = video.ndim == 4
    v = video[None] if squeeze else video
    a, b = v[:, :, :-1], v[:, :, 1:]
    steps = [torch.lerp(a, b, i / factor) for i in range(factor)]
    mid = torch.stack(steps, dim=3).flatten(2, 3)  # (B, C, (L - 1) factor, H, W)
    out = torch.cat([mid, v[:, :, -1:]], dim=2)
    return out[0] if squeeze else out


def _bar(total: int, what: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"{what}: clips", disable=not enabled, leave=False)
