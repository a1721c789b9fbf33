"""unCLIP (Ramesh et al. 2022): p(x | y) = p(x | z_i, y) p(z_i | y) on a CLIP model's image embeddings z_i.

- :mod:`.embeddings`: CLIP image embeddings of a data set (:class:`ImageEmbedded`), cached, and the
  CLIP model's identity that ties a decoder and a prior to one CLIP model;
- :mod:`.decoder`: method ``unclip-decoder``, a diffusion stage conditioned on the embeddings;
- :mod:`.prior`: method ``unclip-prior``, the diffusion and autoregressive priors (caption -> embedding);
- :mod:`.pipeline`: :class:`~.pipeline.UnCLIP`, text to image, variations, interpolations, text diffs;
- :mod:`.cli`: ``difflab unclip variations|interpolate|text-diff``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ImageEmbedded", "clip_identity", "clip_input", "data_key", "image_embeddings"]


def __getattr__(name: str) -> Any:
    """The names of :mod:`.embeddings`, imported on first use (``difflab --help`` imports :mod:`.cli`)."""
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.embeddings"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
