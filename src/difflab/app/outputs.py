"""Where the app writes: one new folder per request under ``OUT/TAB/`` (the only files it serves)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path


def job_folder(out: str | Path, tab: str) -> Path:
    """A new, empty folder ``OUT/TAB/YYYYmmdd-HHMMSS-XXXXXX`` for one request's files."""
    folder = Path(out) / tab / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    return folder
