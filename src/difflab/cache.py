"""difflab's cache folder (trained generic feature nets, CLIP embeddings of data sets)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$DIFFLAB_CACHE``, else ``$XDG_CACHE_HOME/difflab``, else ``~/.cache/difflab``."""
    if os.environ.get("DIFFLAB_CACHE"):
        return Path(os.environ["DIFFLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "difflab"
