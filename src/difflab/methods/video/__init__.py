"""Video diffusion (Ho et al. 2022, "Video Diffusion Models") on the shared parts.

A video stage is a diffusion stage trained by ``difflab train`` on clips (a U-Net with
``model.dims: 3``: space-only convolutions, spatial then temporal attention), optionally with
independent images appended to every clip (``data.image_frames``, joint image-video training).
This package adds what goes past one clip: :mod:`.sampling` (autoregressive extension and
temporal interpolation by reconstruction guidance or replacement) and :mod:`.cli` (``difflab
video sample|extend|interpolate``). See docs/video.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "METHODS",
    "clip_shape",
    "extend",
    "extension_lengths",
    "interpolate",
    "interpolation_factors",
    "linear_interpolate",
]


def __getattr__(name: str) -> Any:
    """The names of :mod:`.sampling`, imported on first use: ``difflab --help`` imports this package's
    ``cli`` module and must not pay for torch."""
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.sampling"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
