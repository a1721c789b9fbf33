"""difflab: the recent advances of diffusion models in one coherent PyTorch toolkit.

``import difflab`` is cheap (no torch import); subpackages load on first use:
``difflab.diffusion`` (schedules, samplers, guidance), ``difflab.analytic`` (exact
denoisers for Gaussian and Gaussian-mixture data).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_SUBMODULES = ("diffusion", "analytic", "nets", "data", "eval", "train", "config", "cli", "demo", "methods")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'difflab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
