"""Network parameterizations eps, x, v and both (Salimans & Ho 2022, "Progressive
Distillation for Fast Sampling of Diffusion Models", section 4; docs/math.md section 2).

Everything is in terms of the clean-data estimate ``x_hat``: a network's raw output is
turned into ``(x_hat, eps_hat)`` by :func:`predict`, and :func:`make_denoiser` wraps a
network into the ``f(z, lam, cond) -> x_hat`` callable that every sampler consumes.
``alpha`` and ``sigma`` are tensors broadcastable against ``z``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._util import alpha_sigma, as_batch, bcast, choose

PARAMETERIZATIONS = ("eps", "x", "v", "both")
Denoiser = Callable[[Tensor, Tensor, Any], Tensor]


def check_parameterization(name: str) -> str:
    return choose("parameterization", name, {p: p for p in PARAMETERIZATIONS})


def output_channels(name: str, channels: int) -> int:
    """Channels a network must output for ``channels`` data channels ("both" doubles them)."""
    return 2 * channels if check_parameterization(name) == "both" else channels


# -- conversions between x, eps and v (z = alpha x + sigma eps) -----------------------
def x_from_eps(z: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (z - sigma * eps) / alpha


def eps_from_x(z: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (z - alpha * x) / sigma


def v_from_x_eps(x: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """``v = alpha eps - sigma x``: the velocity of z along the angle arctan(sigma / alpha)."""
    return alpha * eps - sigma * x


def x_from_v(z: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return alpha * z - sigma * v


def eps_from_v(z: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return sigma * z + alpha * v


def merge_both(z: Tensor, x_tilde: Tensor, eps_tilde: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """ "both": ``x_hat = sigma^2 x_tilde + alpha (z - sigma eps_tilde)`` (weights sigma^2, alpha^2)."""
    return sigma**2 * x_tilde + alpha * (z - sigma * eps_tilde)


# -- raw network output <-> (x_hat, eps_hat) ------------------------------------------
def predict(name: str, out: Tensor, z: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """Turn a network output into ``(x_hat, eps_hat)`` for parameterization ``name``."""
    name = check_parameterization(name)
    if name == "eps":  # (z - sigma eps) / alpha, in two fused passes
        return torch.addcmul(z * (1 / alpha), out, -(sigma / alpha)), out
    if name == "x":
        return out, eps_from_x(z, out, alpha, sigma)
    if name == "v":  # alpha z - sigma v and sigma z + alpha v
        return torch.addcmul(alpha * z, out, -sigma), torch.addcmul(sigma * z, out, alpha)
    if out.shape[1] != 2 * z.shape[1]:
        raise ValueError(f"'both' needs {2 * z.shape[1]} output channels, got {out.shape[1]}")
    x_tilde, eps_tilde = out.chunk(2, dim=1)
    x_hat = merge_both(z, x_tilde, eps_tilde, alpha, sigma)
    return x_hat, eps_from_x(z, x_hat, alpha, sigma)


def target(name: str, x: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """The output a perfect network would give for data ``x`` and noise ``eps``.

    For "both" this is the canonical ``(x, eps)`` pair concatenated on dim 1 (any pair
    that merges to ``x`` is equally perfect).
    """
    name = check_parameterization(name)
    if name == "eps":
        return eps
    if name == "x":
        return x
    if name == "v":
        return v_from_x_eps(x, eps, alpha, sigma)
    return torch.cat([x, eps], dim=1)


def make_denoiser(net: Callable[[Tensor, Tensor, Any], Tensor], parameterization: str) -> Denoiser:
    """Wrap ``net(z, lam, cond) -> raw output`` into a denoiser ``f(z, lam, cond) -> x_hat``."""
    name = check_parameterization(parameterization)

    def denoiser(z: Tensor, lam: Tensor, cond: Any = None) -> Tensor:
        lam_b = as_batch(lam, z)
        alpha, sigma = (bcast(s, z) for s in alpha_sigma(lam_b))
        return predict(name, net(z, lam_b, cond), z, alpha, sigma)[0]

    denoiser.parameterization = name  # type: ignore[attr-defined]
    return denoiser
