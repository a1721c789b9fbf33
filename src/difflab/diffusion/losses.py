"""Training losses (Salimans & Ho 2022, section 4; Hang et al. 2023 for min-SNR; docs/math.md section 2).

Every weighting is written as ``w(lam) * ||x - x_hat||^2`` in data space:

==============  =====================  ==========================================
name            w(lam)                 equivalent
==============  =====================  ==========================================
snr             SNR                    eps-MSE (zero weight at SNR 0)
truncated-snr   max(SNR, 1)            max(||x - x_hat||^2, ||eps - eps_hat||^2)
snr+1           SNR + 1                v-MSE
min-snr         min(SNR, gamma)        Hang et al. 2023 (gamma = 5)
constant        1                      x-MSE
==============  =====================  ==========================================

With ``norm="l1"`` the per-element loss is ``sqrt(w) * |x - x_hat|``, so ``snr`` with L1
is exactly the L1 loss on eps that WaveGrad trains with.

Numerics: the weighted error is evaluated in eps space where SNR > 1 and in x space
elsewhere (``w ||x - x_hat||^2 = (w / SNR) ||eps - eps_hat||^2``), so a network that
predicts eps is never scored through the catastrophic cancellation of ``x_hat`` at high
SNR, and one that predicts x is never divided by a vanishing sigma at low SNR.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._util import alpha_sigma, bcast, choose
from .parameterization import check_parameterization, predict
from .schedules import Schedule

WEIGHTINGS = ("snr", "truncated-snr", "snr+1", "min-snr", "constant")
NORMS = ("l2", "l1")


def loss_weight(name: str, lam: Tensor, gamma: float = 5.0) -> Tensor:
    """The data-space weight ``w(lam)`` of weighting ``name`` (see the module table)."""
    snr = torch.exp(lam)
    fns = {
        "snr": lambda: snr,
        "truncated-snr": lambda: snr.clamp(min=1.0),
        "snr+1": lambda: snr + 1.0,
        "min-snr": lambda: snr.clamp(max=gamma),
        "constant": lambda: torch.ones_like(snr),
    }
    return choose("weighting", name, fns)()


def diffusion_loss(
    out: Tensor,
    x: Tensor,
    eps: Tensor,
    z: Tensor,
    lam: Tensor,
    parameterization: str,
    weighting: str = "truncated-snr",
    norm: str = "l2",
    gamma: float = 5.0,
) -> Tensor:
    """Per-sample loss, shape (B,): mean over the non-batch elements of the weighted error.

    ``out`` is the raw network output at ``z = alpha x + sigma eps`` with log-SNR ``lam`` (B,).
    """
    check_parameterization(parameterization)
    choose("norm", norm, {n: n for n in NORMS})
    lam = lam.to(z.dtype)
    alpha, sigma = (bcast(s, z) for s in alpha_sigma(lam))
    x_hat, eps_hat = predict(parameterization, out, z, alpha, sigma)
    w = loss_weight(weighting, lam, gamma)
    snr = torch.exp(lam)
    err = torch.where(bcast(lam > 0, z), eps - eps_hat, x - x_hat)  # eps space where SNR > 1
    scale = torch.where(lam > 0, w / snr, w)
    if norm == "l2":
        return scale * (err**2).flatten(1).mean(1)
    return scale.sqrt() * err.abs().flatten(1).mean(1)


def training_loss(
    net: Callable[[Tensor, Tensor, Any], Tensor],
    x: Tensor,
    schedule: Schedule,
    parameterization: str = "v",
    weighting: str = "snr+1",
    norm: str = "l2",
    time_sampling: str = "continuous",
    n_discrete: int = 1000,
    gamma: float = 5.0,
    cond: Any = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One Monte Carlo estimate of the diffusion loss on a batch ``x``: a scalar tensor.

    Samples t (continuous or discrete), forms ``z_t = alpha x + sigma eps``, calls
    ``net(z, lam, cond)`` and scores it with :func:`diffusion_loss`.
    """
    t = schedule.sample_t(x.shape[0], time_sampling, n_discrete, generator=generator, device=x.device)
    lam = schedule.lam(t).to(x.dtype)
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    alpha, sigma = (bcast(s, x) for s in alpha_sigma(lam))
    z = alpha * x + sigma * eps
    out = net(z, lam, cond)
    return diffusion_loss(out, x, eps, z, lam, parameterization, weighting, norm, gamma).mean()
