"""Guidance as denoiser wrappers (docs/math.md section 4): each takes a denoiser
``f(z, lam, cond) -> x_hat`` and returns one, so every guidance composes with every
sampler and with each other, e.g. ``dynamic_threshold(cfg(f, 5.0, null), 0.995)``.

Weight convention (SPEC section 0): ``pred = uncond + w (cond - uncond)``; ``w = 1`` is
plain conditional sampling and ``w = 0`` unconditional. Ho & Salimans (2021) write
``(1 + w') cond - w' uncond``: their ``w'`` is our ``w - 1``. Because ``x_hat`` is affine
in ``eps_hat`` (and in ``v_hat``) at fixed ``z``, the combination is the same on any of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._util import alpha_sigma, bcast
from .parameterization import Denoiser


# -- batching conditions for one forward pass -------------------------------------------
def cat_cond(a: Any, b: Any) -> Any:
    """Concatenate two conditions of the same structure (tensor, dict, list, tuple) on dim 0."""
    if isinstance(a, Tensor):
        return torch.cat([a, b], dim=0)
    if isinstance(a, dict):
        a, b = _fill_drop_flags(a, b), _fill_drop_flags(b, a)
        if a.keys() != b.keys():
            raise ValueError(f"cond and uncond have different keys: {sorted(a)} vs {sorted(b)}")
        return {k: cat_cond(a[k], b[k]) for k in a}
    if isinstance(a, (list, tuple)):
        return type(a)(cat_cond(x, y) for x, y in zip(a, b, strict=True))
    if a is None and b is None:
        return None
    raise TypeError(f"cannot batch a condition of type {type(a).__name__}; use tensors, dicts, lists or tuples")


def _fill_drop_flags(d: dict, other: dict) -> dict:
    """difflab's null-embedding convention: a boolean ``<name>_drop`` flag (True = use the learned
    null condition) that only the other side has is all False here."""
    missing = [k for k in other if k.endswith("_drop") and k not in d and isinstance(other[k], Tensor)]
    return {**d, **{k: torch.zeros_like(other[k], dtype=torch.bool) for k in missing}} if missing else d


def cfg(denoiser: Denoiser, weight: float | Tensor, uncond: Any | Callable[[Any], Any]) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2021, "Classifier-Free Diffusion Guidance").

    ``uncond`` is the null condition (same structure as ``cond``, e.g. the null class
    label) or a function ``cond -> null condition`` such as ``difflab.nets.null_cond``. Both
    halves go through the denoiser in one batched call; the result is
    ``torch.lerp(x_uncond, x_cond, weight)``. ``weight`` is a number or a (B,) tensor of
    per-sample weights (guided distillation draws one w per example).
    """

    def guided(z: Tensor, lam: Tensor, cond: Any = None) -> Tensor:
        null = uncond(cond) if callable(uncond) else uncond
        x = denoiser(torch.cat([z, z]), torch.cat([lam, lam]), cat_cond(cond, null))
        x_c, x_u = x.chunk(2)
        w = bcast(weight.to(x.dtype), x_c) if isinstance(weight, Tensor) else weight
        return torch.lerp(x_u, x_c, w)

    return guided


def classifier_guidance(
    denoiser: Denoiser,
    classifier: Callable[[Tensor, Tensor], Tensor],
    scale: float,
    labels: Tensor | None = None,
) -> Denoiser:
    """Classifier guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", Alg. 1/2).

    ``classifier(z, lam) -> logits`` is trained on noisy inputs. With
    ``g = grad_z log p(y | z_t)``: ``eps_guided = eps_hat - s sigma g``, i.e.
    ``x_hat_guided = x_hat + s (sigma^2 / alpha) g``. ``labels`` defaults to ``cond``.
    """

    def guided(z: Tensor, lam: Tensor, cond: Any = None) -> Tensor:
        y = cond if labels is None else labels
        x_hat = denoiser(z, lam, cond)
        with torch.enable_grad():
            zg = z.detach().requires_grad_(True)
            logp = torch.log_softmax(classifier(zg, lam), dim=-1)
            sel = logp.gather(1, y.long().view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(sel, zg)
        alpha, sigma = (bcast(s, z) for s in alpha_sigma(lam))
        return x_hat + scale * sigma**2 / alpha * grad

    return guided


# -- thresholding --------------------------------------------------------------------------
def dynamic_threshold_x(x: Tensor, quantile: float = 0.995, max_value: float = math.inf) -> Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, section 2.3), per sample:
    ``s = clamp(quantile(|x|, p), 1, max_value)``, ``x <- clip(x, -s, s) / s``."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must lie in (0, 1], got {quantile}")
    flat = x.reshape(x.shape[0], -1)
    mag = flat.abs() if flat.dtype in (torch.float32, torch.float64) else flat.abs().float()  # quantile needs it
    s = bcast(mag.quantile(quantile, dim=1).clamp(1.0, max_value).to(x.dtype), x)
    return torch.maximum(torch.minimum(x, s), -s) / s


def static_threshold(denoiser: Denoiser, limit: float = 1.0) -> Denoiser:
    """Clip ``x_hat`` to ``[-limit, limit]`` at every step (Ho et al. 2020; Saharia et al. 2022)."""
    return lambda z, lam, cond=None: denoiser(z, lam, cond).clamp(-limit, limit)


def dynamic_threshold(denoiser: Denoiser, quantile: float = 0.995, max_value: float = math.inf) -> Denoiser:
    """Wrap a denoiser with :func:`dynamic_threshold_x`."""
    dynamic_threshold_x(torch.zeros(1, 1), quantile)  # validate arguments now, not at step 0
    return lambda z, lam, cond=None: dynamic_threshold_x(denoiser(z, lam, cond), quantile, max_value)


# -- conditioning on known coordinates (Video Diffusion Models, Ho et al. 2022, section 3.1) --
def _noisy_known(z: Tensor, lam: Tensor, known: Tensor, mask: Tensor, generator) -> Tensor:
    """``z`` with the known coordinates replaced by a fresh draw of ``q(z_t | x^a)``."""
    alpha, sigma = (bcast(s, z) for s in alpha_sigma(lam))
    noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    return torch.where(mask, alpha * known + sigma * noise, z)


def replacement(denoiser: Denoiser, known: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> Denoiser:
    """The replacement method: the known coordinates ``x^a`` (where ``mask`` is true) of the
    denoiser's input are a fresh sample of ``q(z_t | x^a)`` at every step, and ``x_hat^a = x^a``."""
    mask = mask.bool()

    def guided(z: Tensor, lam: Tensor, cond: Any = None) -> Tensor:
        x_hat = denoiser(_noisy_known(z, lam, known, mask, generator), lam, cond)
        return torch.where(mask, known, x_hat)

    return guided


def reconstruction_guidance(
    denoiser: Denoiser,
    known: Tensor,
    mask: Tensor | None = None,
    weight: float = 1.0,
    operator: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Denoiser:
    """Reconstruction guidance (Ho et al. 2022, "Video Diffusion Models", eq. 7).

    ``x_hat^b <- x_hat^b - (w_r alpha_t / 2) grad_{z^b} ||x^a - x_hat^a(z_t)||^2``, from
    approximating ``q(x^a | z_t)`` by ``N(x_hat^a, sigma_t^2 / alpha_t^2)``; the known part
    is handled by replacement as in :func:`replacement`. With ``operator`` (e.g. a
    differentiable down-sampling, for super-resolution) ``known`` is the measurement ``y``,
    the residual is ``y - operator(x_hat)`` and every coordinate is guided (no mask).
    """
    if (mask is None) == (operator is None):
        raise ValueError("reconstruction_guidance needs exactly one of mask (known coordinates) or operator")
    mask_b = None if mask is None else mask.bool()

    def guided(z: Tensor, lam: Tensor, cond: Any = None) -> Tensor:
        z_in = z if mask_b is None else _noisy_known(z, lam, known, mask_b, generator)
        with torch.enable_grad():
            zg = z_in.detach().requires_grad_(True)
            x_hat = denoiser(zg, lam, cond)
            resid = known - (operator(x_hat) if operator is not None else x_hat)
            if mask_b is not None:
                resid = torch.where(mask_b, resid, torch.zeros_like(resid))
            (grad,) = torch.autograd.grad(resid.pow(2).sum(), zg)
        alpha = bcast(alpha_sigma(lam)[0], z)
        x_hat = x_hat.detach() - (weight * alpha / 2) * grad
        return x_hat if mask_b is None else torch.where(mask_b, known, x_hat)

    return guided
