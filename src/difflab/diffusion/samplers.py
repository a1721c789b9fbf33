"""Samplers: stateless functions of a denoiser ``f(z, lam, cond) -> x_hat`` and a grid.

``lams`` is a 1-D tensor of ``steps + 1`` log-SNR values running from noisy to clean
(strictly increasing); a final ``+inf`` means "return the denoiser's ``x_hat``". Build
one with :meth:`difflab.diffusion.Schedule.lams`. Samplers never see a schedule or a
step index, only log-SNR, so the same function serves every schedule and modality.

Each step's coefficients are computed in float64 from the two log-SNR values, and the
update is a fused linear combination of ``z`` and ``x_hat``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor

from ._util import check_finite, choose, fmt_lam
from .parameterization import Denoiser

NoiseSampler = Callable[[Tensor], Tensor]
Callback = Callable[[dict], None]


def _ab(lam: float) -> tuple[float, float]:
    """(alpha, sigma) for a Python-float log-SNR, without cancellation at either end."""
    if lam == math.inf:
        return 1.0, 0.0
    e = math.exp(-abs(lam))
    big, small = 1.0 / (1.0 + e), e / (1.0 + e)  # sigmoid(|lam|), sigmoid(-|lam|)
    return (math.sqrt(big), math.sqrt(small)) if lam >= 0 else (math.sqrt(small), math.sqrt(big))


def _grid(lams: Tensor | list[float]) -> list[float]:
    g = [float(v) for v in torch.as_tensor(lams, dtype=torch.float64).flatten()]
    if len(g) < 2:
        raise ValueError("lams needs at least 2 values (steps >= 1): noisy start ... clean end")
    if any(math.isnan(v) for v in g):
        raise ValueError("lams must be finite (only the last value may be +inf), got NaN")
    if all(b < a for a, b in pairwise(g)):  # checked first: a reversed grid starts at +inf
        raise ValueError(
            "lams must increase (noisy -> clean: low log-SNR first), this grid decreases: reverse it (lams.flip(0))"
        )
    if any(b <= a for a, b in pairwise(g)):
        raise ValueError("lams must increase strictly (noisy -> clean); reverse the grid?")
    if g[0] == -math.inf or any(math.isinf(v) for v in g[:-1]):
        raise ValueError("lams must be finite (only the last value may be +inf)")
    return g


class _Loop:
    """Shared bookkeeping: calls the denoiser with a batched lam, checks it, reports progress."""

    def __init__(self, denoiser, lams, cond, callback, progress, check, generator, noise_sampler, name):
        self.denoiser, self.cond, self.callback, self.check = denoiser, cond, callback, check
        self.lams = _grid(lams)
        self.steps = len(self.lams) - 1
        self.noise_sampler = noise_sampler or (
            lambda like: torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
        )
        self.bar = None
        if progress:
            from tqdm.auto import tqdm  # lazy: keep `import difflab` cheap

            self.bar = tqdm(total=self.steps, desc=name, unit="step", leave=False)

    def x_hat(self, z: Tensor, lam: float, i: int) -> Tensor:
        lam_b = torch.full((z.shape[0],), lam, dtype=z.dtype, device=z.device)
        x = self.denoiser(z, lam_b, self.cond)
        if x.shape != z.shape:
            raise ValueError(f"denoiser returned shape {tuple(x.shape)} for input {tuple(z.shape)} at step {i}")
        if self.check:
            check_finite(x, f"denoiser at step {i} of {self.steps} (lam={fmt_lam(lam)})")
        return x

    def done(self, i: int, z: Tensor, x_hat: Tensor) -> None:
        if self.callback is not None:
            self.callback({"step": i, "steps": self.steps, "lam": self.lams[i], "z": z, "x_hat": x_hat})
        if self.bar is not None:
            self.bar.update(1)
            if i == self.steps - 1:
                self.bar.close()


def _lin(a: float, z: Tensor, b: float, x: Tensor) -> Tensor:
    """a * z + b * x in two fused passes."""
    return torch.add(z, x, alpha=b / a).mul_(a) if a != 0 else x * b


# -- single steps (public: they are what diffusers' scheduler.step is checked against) --
def ddim_step(
    z: Tensor, x_hat: Tensor, lam_t: float, lam_s: float, eta: float = 0.0, noise: Tensor | None = None
) -> Tensor:
    """One DDIM step from log-SNR ``lam_t`` to ``lam_s > lam_t`` (Song et al. 2021, eq. 12).

    ``z_s = alpha_s x_hat + sqrt(sigma_s^2 - c^2) eps_hat + c noise`` with
    ``c = eta * tilde_sigma`` (the DDPM posterior std), ``eps_hat = (z - alpha_t x_hat) / sigma_t``.
    """
    a_t, s_t = _ab(lam_t)
    a_s, s_s = _ab(lam_s)
    c = eta * s_s * math.sqrt(-math.expm1(lam_t - lam_s)) if eta > 0 and s_s > 0 else 0.0
    d = math.sqrt(max(s_s * s_s - c * c, 0.0))
    out = _lin(d / s_t, z, a_s - d * a_t / s_t, x_hat)
    if c > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs a noise tensor")
        out.add_(noise, alpha=c)
    return out


def ddpm_step(
    z: Tensor, x_hat: Tensor, lam_t: float, lam_s: float, gamma: float = 0.0, noise: Tensor | None = None
) -> Tensor:
    """One ancestral step: a draw from ``q(z_s | z_t, x = x_hat)`` (Ho et al. 2020; SPEC section 3).

    Mean ``(alpha_{t|s} sigma_s^2 / sigma_t^2) z_t + (alpha_s sigma_{t|s}^2 / sigma_t^2) x_hat``,
    variance ``(tilde_sigma^2)^(1 - gamma) (sigma_{t|s}^2)^gamma`` (gamma: the variance
    interpolation of Video Diffusion Models, Ho et al. 2022; 0 gives the posterior).
    """
    a_t, s_t = _ab(lam_t)
    a_s, s_s = _ab(lam_s)
    r = -math.expm1(lam_t - lam_s)  # sigma_{t|s}^2 / sigma_t^2
    out = _lin(a_t * s_s * s_s / (a_s * s_t * s_t), z, a_s * r, x_hat)
    if s_s > 0:
        var = (s_s * s_s * r) ** (1 - gamma) * (s_t * s_t * r) ** gamma
        if noise is None:
            raise ValueError("ddpm_step needs a noise tensor before the final step")
        out.add_(noise, alpha=math.sqrt(var))
    return out


# -- samplers ---------------------------------------------------------------------------
def ddim(
    denoiser: Denoiser,
    z: Tensor,
    lams: Tensor,
    *,
    eta: float = 0.0,
    cond: Any = None,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    """DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12) in log-SNR.

    ``eta = 0`` is deterministic and equals Euler's method on the probability-flow ODE in
    ``(z / alpha, sigma / alpha)`` (Karras et al. 2022); ``eta = 1`` matches DDPM's variance.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    loop = _Loop(denoiser, lams, cond, callback, progress, check_finite, generator, noise_sampler, "ddim")
    g = loop.lams
    for i in range(loop.steps):
        x_hat = loop.x_hat(z, g[i], i)
        noise = loop.noise_sampler(z) if eta > 0 and g[i + 1] < math.inf else None
        z = ddim_step(z, x_hat, g[i], g[i + 1], eta, noise)
        loop.done(i, z, x_hat)
    return z


def ddim_invert(
    denoiser: Denoiser,
    x: Tensor,
    lams: Tensor,
    *,
    cond: Any = None,
    callback: Callback | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    """DDIM inversion: the noise ``z`` at ``lams[0]`` from which :func:`ddim` (eta 0) on ``lams``
    returns (approximately) the clean ``x`` -- its steps run backwards on the same grid.

    The deterministic DDIM update is an Euler step of the probability-flow ODE, so running it from
    clean to noisy encodes ``x`` (Song et al. 2021, section 4.3; used by unCLIP to interpolate the
    decoder's latents). It starts at the cleanest finite log-SNR of the grid with
    ``z = alpha x`` (its ``sigma`` is negligible there: about 5e-4 at log-SNR 15) and, between two
    grid points, predicts ``x_hat`` at the cleaner one; the error shrinks with more steps.
    """
    loop = _Loop(denoiser, lams, cond, callback, progress, check_finite, None, None, "ddim inversion")
    g = loop.lams
    last = len(g) - 1 if math.isfinite(g[-1]) else len(g) - 2
    if last < 1:
        raise ValueError("ddim_invert needs a grid with at least two finite log-SNR values")
    z = x * _ab(g[last])[0]
    for k, i in enumerate(range(last, 0, -1)):
        x_hat = loop.x_hat(z, g[i], k)
        z = ddim_step(z, x_hat, g[i], g[i - 1])
        loop.done(k, z, x_hat)
    if loop.bar is not None:
        loop.bar.close()
    return z


def ddpm(
    denoiser: Denoiser,
    z: Tensor,
    lams: Tensor,
    *,
    gamma: float = 0.0,
    cond: Any = None,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    """Ancestral sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Alg. 2),
    with the optional variance interpolation ``gamma`` of Video Diffusion Models (Ho et al. 2022)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    loop = _Loop(denoiser, lams, cond, callback, progress, check_finite, generator, noise_sampler, "ddpm")
    g = loop.lams
    for i in range(loop.steps):
        x_hat = loop.x_hat(z, g[i], i)
        noise = loop.noise_sampler(z) if g[i + 1] < math.inf else None
        z = ddpm_step(z, x_hat, g[i], g[i + 1], gamma, noise)
        loop.done(i, z, x_hat)
    return z


def dpmpp_2m(
    denoiser: Denoiser,
    z: Tensor,
    lams: Tensor,
    *,
    cond: Any = None,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    check_finite: bool = True,
    lower_order_final: bool = True,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
    Diffusion Probabilistic Models", Algorithm 2): multistep, second order, data prediction.

    In the paper's ``lambda = log(alpha / sigma) = lam / 2``, with ``h_i = lambda_i - lambda_{i-1}``:
    ``z_i = (sigma_i / sigma_{i-1}) z_{i-1} - alpha_i (e^{-h_i} - 1) D_i`` where ``D_1 = x_hat_0``
    and ``D_i = (1 + 1 / (2 r_i)) x_hat_{i-1} - x_hat_{i-2} / (2 r_i)``, ``r_i = h_{i-1} / h_i``.
    A final step to ``lam = +inf`` is first order (it returns ``x_hat``). With
    ``lower_order_final`` a finite last step of a grid with fewer than 15 steps is first
    order too, which keeps a large last step stable (the same rule as diffusers').
    """
    loop = _Loop(denoiser, lams, cond, callback, progress, check_finite, generator, noise_sampler, "dpmpp_2m")
    g = loop.lams
    x_prev, h_prev = None, None
    for i in range(loop.steps):
        x_hat = loop.x_hat(z, g[i], i)
        if g[i + 1] == math.inf:
            z = x_hat
        else:
            a_t, s_t = _ab(g[i])
            a_s, s_s = _ab(g[i + 1])
            h = (g[i + 1] - g[i]) / 2
            d = x_hat
            last_low = lower_order_final and i == loop.steps - 1 and loop.steps < 15
            if x_prev is not None and not last_low:  # D = x_hat + (x_hat - x_prev) / (2 r)
                r = h_prev / h
                d = torch.sub(x_hat, x_prev).mul_(1.0 / (2 * r)).add_(x_hat)
            z = _lin(s_s / s_t, z, -a_s * math.expm1(-h), d)
            x_prev, h_prev = x_hat, h
        loop.done(i, z, x_hat)
    return z


def heun(
    denoiser: Denoiser,
    z: Tensor,
    lams: Tensor,
    *,
    cond: Any = None,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    """Heun's second-order method on the probability-flow ODE (Karras et al. 2022, "Elucidating
    the Design Space of Diffusion-Based Generative Models", Algorithm 1, deterministic).

    Works in ``y = z / alpha`` and ``s = sigma / alpha = exp(-lam / 2)``, where the ODE is
    ``dy/ds = (y - x_hat) / s``. Two denoiser calls per step except the last (to ``s = 0``).

    The trapezoidal correction amplifies the change of ``x_hat`` across a step by about
    ``s / (2 s_next)``, so a step that shrinks ``s`` a hundredfold (e.g. the first step of a
    uniform-in-t grid from lam = -20) is unstable: use ``spacing="lam"`` or start near
    lam = -9 (Karras et al.'s sigma_max = 80). A RuntimeWarning says when a grid has such a step.
    """
    loop = _Loop(denoiser, lams, cond, callback, progress, check_finite, generator, noise_sampler, "heun")
    g = loop.lams
    worst = max(b - a for a, b in pairwise(g[:-1])) if len(g) > 2 else 0.0
    if worst > 2 * math.log(100):
        warnings.warn(
            f"heun: a grid step shrinks sigma/alpha {math.exp(worst / 2):.0f}-fold; the second-order correction "
            "is unstable there. Use a uniform-in-lam grid (schedule.lams(n, 'lam')) or start at lam >= -9.",
            RuntimeWarning,
            stacklevel=2,
        )
    for i in range(loop.steps):
        x_hat = loop.x_hat(z, g[i], i)
        if g[i + 1] == math.inf:  # an Euler step to s = 0 lands on x_hat
            z = x_hat
        else:
            # With q = s_next / s the Euler predictor is y_e = q y + (1 - q) x_hat and the
            # trapezoid y + (s_next - s)(d + d_e) / 2 expands to q y + c1 x_hat + c2 x_e.
            a_t, a_s = _ab(g[i])[0], _ab(g[i + 1])[0]
            q = math.exp((g[i] - g[i + 1]) / 2)
            z_euler = _lin(a_s * q / a_t, z, a_s * (1 - q), x_hat)
            x_euler = loop.x_hat(z_euler, g[i + 1], i)
            c1, c2 = (1 - q) * (2 - 1 / q) / 2, (1 / q - 1) / 2
            z = _lin(a_s * q / a_t, z, a_s * c1, x_hat).add_(x_euler, alpha=a_s * c2)
        loop.done(i, z, x_hat)
    return z


SAMPLERS: dict[str, Callable[..., Tensor]] = {"ddpm": ddpm, "ddim": ddim, "dpmpp_2m": dpmpp_2m, "heun": heun}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """Look a sampler up by name: ``ddpm``, ``ddim``, ``dpmpp_2m`` or ``heun``."""
    return choose("sampler", name, SAMPLERS)


def sample(name: str, denoiser: Denoiser, z: Tensor, lams: Tensor, **kwargs: Any) -> Tensor:
    """Run sampler ``name``; keyword arguments go to it (``eta``, ``gamma``, ``cond`` ...)."""
    return get_sampler(name)(denoiser, z, lams, **kwargs)
