"""Video diffusion (Ho et al. 2022, "Video Diffusion Models") on the shared parts.

A video stage is a diffusion stage trained by ``difflab train`` on clips (a U-Net with
``model.dims: 3``: space-only convolutions, spatial then temporal attention), optionally with
independent images appended to every clip (``data.image_frames``, joint image-video training).
This package adds what goes past one clip: :mod:`.sampling` (autoregressive extension and
temporal interpolation by reconstruction guidance or replacement) and :mod:`.cli` (``difflab
video sample|extend|interpolate``). See docs/video.md.
"""

from .sampling import (
    METHODS,
    clip_shape,
    extend,
    extension_lengths,
    interpolate,
    interpolation_factors,
    linear_interpolate,
)

__all__ = [
    "METHODS",
    "clip_shape",
    "extend",
    "extension_lengths",
    "interpolate",
    "interpolation_factors",
    "linear_interpolate",
]
