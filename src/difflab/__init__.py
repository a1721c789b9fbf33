"""difflab: the recent advances of diffusion models in one coherent PyTorch toolkit.

``import difflab`` is cheap (no torch import); subpackages load on first use:
``difflab.diffusion`` (schedules, samplers, guidance), ``difflab.analytic`` (exact
denoisers for Gaussian and Gaussian-mixture data), ``difflab.load(path)`` (any checkpoint,
dispatched on its method; see :func:`difflab.methods.load`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_SUBMODULES = ("diffusion", "analytic", "nets", "data", "eval", "train", "config", "cli", "demo", "methods")


def load(path: Any, weights: str = "ema", device: Any = "cpu") -> Any:
    """What a checkpoint holds, ready to use (a stage, an ARDM, a vocoder, a cascade): see
    :func:`difflab.methods.load`."""
    from .methods import load as load_any

    return load_any(path, weights, device)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'difflab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
