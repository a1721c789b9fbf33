"""WaveGrad's continuous noise level, PriorGrad's data-dependent prior, sampling and schedule search.

Chen et al. 2021, "WaveGrad: Estimating Gradients for Waveform Generation" (docs/math.md section 10):

- training levels from ``beta = linspace(1e-6, 0.01, 1000)``, ``l_s = sqrt(prod_{i<=s}(1 - beta_i))``,
  ``l_0 = 1``; a step ``s`` is drawn uniformly and ``sqrt(alpha_bar) ~ U[l_s, l_{s-1}]`` (section 3.1,
  Algorithm 1); L1 loss on eps;
- sampling is DDPM ancestral on a chosen beta schedule (Algorithm 2), no noise at the last step;
  here it is :func:`difflab.diffusion.ddpm` over the log-SNR grid of the betas;
- few-step schedules by grid search over ``beta_n = m_n 10^(e_n)`` scored by log-mel distance.

Lee et al. 2022, "PriorGrad: Improving Conditional Denoising Diffusion Models with Data-Dependent
Adaptive Prior": the noise is ``N(0, Sigma)`` with ``Sigma = diag(std^2)``, ``std`` per mel frame from
the frame's energy (normalised to ``[std_min, 1]``). Training noise, the loss norm
(``|Sigma^{-1/2}(eps - eps_hat)|``), the sampler's start and every ancestral draw use the same
``Sigma`` (:func:`prior_std`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ...diffusion import ddim, ddpm, make_denoiser

TRAIN_BETAS = (1e-6, 0.01, 1000)  # linspace(start, end, n)
COMMUNITY_6 = (1e-6, 1.89e-5, 1.19e-4, 1.00e-3, 1.11e-2, 0.06)


def train_betas() -> Tensor:
    return torch.linspace(*TRAIN_BETAS[:2], TRAIN_BETAS[2], dtype=torch.float64)


def noise_levels(betas: Tensor | Sequence[float]) -> Tensor:
    """``l_0 = 1, l_s = sqrt(prod_{i<=s} (1 - beta_i))``: float64 (N + 1,)."""
    b = torch.as_tensor(betas, dtype=torch.float64)
    return torch.cat([b.new_ones(1), torch.cumprod(1.0 - b, 0).sqrt()])


def sample_noise_level(batch: int, levels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """WaveGrad's continuous level: ``s ~ U{1..N}``, ``sqrt(alpha_bar) ~ U[l_s, l_{s-1}]`` (float64, (B,))."""
    dev = generator.device if generator is not None else torch.device("cpu")
    n = levels.numel() - 1
    s = torch.randint(1, n + 1, (batch,), generator=generator, device=dev)
    u = torch.rand(batch, generator=generator, dtype=torch.float64, device=dev)
    lv = levels.to(dev)
    return lv[s] + u * (lv[s - 1] - lv[s])


def level_to_lam(level: Tensor, lam_max: float = 30.0) -> Tensor:
    """log-SNR of a noise level ``l = sqrt(alpha_bar)``: ``log(l^2 / (1 - l^2))`` (capped at ``lam_max``)."""
    a2 = level.to(torch.float64) ** 2
    return (torch.log(a2) - torch.log1p(-a2)).clamp(max=lam_max).nan_to_num(lam_max)


# -- PriorGrad ------------------------------------------------------------------------------
def frame_energy(mel: Tensor) -> Tensor:
    """RMS of the magnitude mel per frame: (B, n_mels, T) log-mel -> (B, T)."""
    return torch.exp(2.0 * mel.float()).mean(1).sqrt()


def prior_std(mel: Tensor, hop: int, energy_ref: float, std_min: float = 0.1) -> Tensor:
    """PriorGrad's per-sample noise std, (B, 1, T * hop): ``clamp(energy / energy_ref, std_min, 1)`` per frame."""
    if not energy_ref > 0:
        raise ValueError("PriorGrad needs prior_energy_ref > 0 (set by the trainer from the training data)")
    std = (frame_energy(mel) / energy_ref).clamp(std_min, 1.0)
    return std.repeat_interleave(hop, dim=-1)[:, None, :]


def wavegrad_loss(
    net: Callable[[Tensor, Tensor, Tensor], Tensor],
    x: Tensor,
    mel: Tensor,
    levels: Tensor,
    std: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """L1 on eps at a continuous noise level (WaveGrad Alg. 1); with PriorGrad's ``std``, eps ~ N(0, std^2)
    and the error is measured as ``|eps - eps_hat| / std`` (the Sigma^{-1} norm of Lee et al. 2022, in L1)."""
    level = sample_noise_level(x.shape[0], levels, generator)
    lam = level_to_lam(level).to(x.device)
    a = level.to(device=x.device, dtype=x.dtype)[:, None, None]
    n = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    eps = n if std is None else n * std
    z = a * x + (1.0 - a * a).clamp(min=0).sqrt() * eps
    out = net(z, lam.to(x.dtype), mel)
    err = (out.float() - eps.float()).abs()
    if std is not None:
        err = err / std.float()
    return err.mean()


# -- schedules and sampling -----------------------------------------------------------------
def naive_betas(steps: int) -> list[float]:
    """One decade per step, mantissa 1: ``beta_n = 10^(n - steps - 1)`` (the grid search's start)."""
    return [10.0 ** (n - steps - 1) for n in range(1, steps + 1)]


def fixed_betas(steps: int) -> list[float]:
    """The fixed-formula schedules: 1000 = training, 50 = linspace(1e-4, 0.05), 25 = linspace(1e-4, 0.1)."""
    if steps == 1000:
        return train_betas().tolist()
    if steps in (25, 50):
        return torch.linspace(1e-4, 0.05 if steps == 50 else 0.1, steps, dtype=torch.float64).tolist()
    if steps == 6:
        return list(COMMUNITY_6)
    raise ValueError(f"no fixed schedule for {steps} steps; fixed: 6 (community), 25, 50, 1000")


def betas_to_lams(betas: Sequence[float] | Tensor) -> Tensor:
    """The DDPM sampling grid of a beta schedule: lam(alpha_bar_N) ... lam(alpha_bar_1), then +inf."""
    b = torch.as_tensor(betas, dtype=torch.float64).flatten()
    if b.numel() < 1 or not bool(((b > 0) & (b < 1)).all()):
        raise ValueError("betas must be a non-empty list of values in (0, 1)")
    log_ab = torch.cumsum(torch.log1p(-b), 0)
    lam = log_ab - torch.log(-torch.expm1(log_ab))
    return torch.cat([lam.flip(0), torch.tensor([math.inf], dtype=torch.float64)])


@torch.no_grad()
def sample(
    net: torch.nn.Module,
    mel: Tensor,
    betas: Sequence[float] | Tensor,
    *,
    std: Tensor | None = None,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
) -> Tensor:
    """Waveforms (B, 1, T * hop) for log-mel (B, n_mels, T): DDPM ancestral (WaveGrad Alg. 2) from
    ``N(0, Sigma)`` with every draw ``N(0, Sigma)`` (``Sigma = std^2``, identity without PriorGrad).
    ``deterministic``: DDIM on the same levels instead (the sampler of a distilled student)."""
    hop = net.hop
    shape = (mel.shape[0], 1, mel.shape[-1] * hop)

    def noise(like: Tensor) -> Tensor:
        n = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        return n if std is None else n * std.to(like.dtype)

    z = noise(torch.empty(shape, device=mel.device))
    denoiser = make_denoiser(net, "eps")
    if deterministic:
        return ddim(denoiser, z, betas_to_lams(betas), cond=mel, check_finite=False)
    return ddpm(denoiser, z, betas_to_lams(betas), cond=mel, noise_sampler=noise, check_finite=False)


# -- grid search ----------------------------------------------------------------------------
def search_schedule(
    score: Callable[[list[float]], float],
    steps: int = 6,
    *,
    exponents: Sequence[int] | None = None,
    mantissas: Sequence[int] = tuple(range(1, 10)),
    method: str = "coordinate",
    max_passes: int = 3,
) -> tuple[list[float], float, int]:
    """Grid search over ``beta_n = m_n 10^(e_n)`` (WaveGrad section 4.3): lower ``score`` is better.

    ``exponents`` default to one decade per step (``-steps .. -1``). ``"exhaustive"`` tries all
    ``len(mantissas)^steps`` schedules; ``"coordinate"`` starts from the naive schedule (m = 1) and
    sweeps one ``m_n`` at a time until a pass changes nothing (at most ``max_passes``).
    Returns (best betas, best score, number of schedules scored).
    """
    exps = list(exponents) if exponents is not None else list(range(-steps, 0))
    if len(exps) != steps:
        raise ValueError(f"need {steps} exponents, got {len(exps)}")
    cache: dict[tuple[int, ...], float] = {}

    def evaluate(ms: tuple[int, ...]) -> float:
        if ms not in cache:
            cache[ms] = float(score([m * 10.0**e for m, e in zip(ms, exps, strict=True)]))
        return cache[ms]

    if method == "exhaustive":
        best = min(itertools.product(mantissas, repeat=steps), key=evaluate)
    elif method == "coordinate":
        best = tuple(min(mantissas) for _ in range(steps))
        for _ in range(max_passes):
            before = best
            for n in range(steps):
                cands = [best[:n] + (m,) + best[n + 1 :] for m in mantissas]
                best = min(cands, key=evaluate)
            if best == before:
                break
    else:
        raise ValueError(f"unknown search method {method!r}; valid: coordinate, exhaustive")
    return [m * 10.0**e for m, e in zip(best, exps, strict=True)], cache[best], len(cache)
