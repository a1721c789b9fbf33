"""Small helpers shared by the diffusion modules: name lookup, broadcasting, checks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


def choose(kind: str, name: str, options: Mapping[str, T]) -> T:
    """Look ``name`` up in ``options``; an unknown name is a ValueError listing the valid ones."""
    try:
        return options[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(options))
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {valid}") from None


def as_batch(value: Tensor | float, z: Tensor) -> Tensor:
    """Return ``value`` (scalar or shape (B,)) as a (B,) tensor on ``z``'s device and dtype."""
    v = torch.as_tensor(value, dtype=z.dtype, device=z.device)
    if v.ndim == 0:
        v = v.expand(z.shape[0])
    if v.shape != (z.shape[0],):
        raise ValueError(f"expected a scalar or a ({z.shape[0]},) tensor, got shape {tuple(v.shape)}")
    return v


def bcast(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample (B,) tensor so it broadcasts against ``like`` of shape (B, ...)."""
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


def alpha_sigma(lam: Tensor) -> tuple[Tensor, Tensor]:
    """alpha = sqrt(sigmoid(lam)), sigma = sqrt(sigmoid(-lam)) (variance preserving, SPEC section 0)."""
    return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


def check_steps(steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def check_finite(x: Tensor, what: str) -> None:
    """Raise FloatingPointError naming ``what`` if ``x`` holds NaN or inf.

    A sum is non-finite whenever an element is, so one cheap reduction settles the common
    case; only a non-finite sum (possibly an overflow of finite values) pays the exact check.
    """
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise FloatingPointError(f"{what} returned non-finite values (NaN or inf)")


def fmt_lam(lam: float) -> str:
    return "inf" if math.isinf(lam) else f"{lam:.4g}"
