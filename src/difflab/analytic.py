"""Exact denoisers for data whose distribution is known in closed form.

For Gaussian data ``x ~ N(mu, S)`` and ``z = alpha x + sigma eps`` the optimal denoiser is
``E[x | z] = mu + alpha S (alpha^2 S + sigma^2 I)^{-1} (z - alpha mu)``; for a mixture of
Gaussians it is the posterior-weighted mean of the components' denoisers. These serve as
ground truth for samplers and guidance (tests, benchmarks, the demo) and let a user check
their own sampler against the exact probability-flow solution.

Data are vectors: ``z`` has shape (B, d). Computation happens in ``z``'s dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .diffusion._util import alpha_sigma, as_batch


class Gaussian:
    """``N(mean, cov)`` in d dimensions, with its exact denoiser and probability-flow map."""

    def __init__(self, mean: Sequence[float] | Tensor, cov: Sequence[Sequence[float]] | Tensor) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.cov = torch.as_tensor(cov, dtype=torch.float64)
        d = self.mean.numel()
        if self.cov.shape != (d, d):
            raise ValueError(f"cov must be ({d}, {d}), got {tuple(self.cov.shape)}")
        self.evals, self.evecs = torch.linalg.eigh(self.cov)
        if bool((self.evals <= 0).any()):
            raise ValueError("cov must be positive definite")

    @property
    def dim(self) -> int:
        return self.mean.numel()

    def _gain(self, z: Tensor, lam: Tensor, num: Tensor) -> Tensor:
        """U diag(num / (alpha^2 s + sigma^2)) U^T (z - alpha mu), batched over lam."""
        alpha, sigma = alpha_sigma(as_batch(lam, z))
        u, mu = self.evecs.to(z), self.mean.to(z)
        r = (z - alpha[:, None] * mu) @ u
        denom = alpha[:, None] ** 2 * self.evals.to(z) + sigma[:, None] ** 2
        return (r * num / denom) @ u.T

    def denoise(self, z: Tensor, lam: Tensor, cond: object = None) -> Tensor:
        """``E[x | z_lam]``; ``cond`` is ignored (use as a denoiser callable)."""
        alpha = alpha_sigma(as_batch(lam, z))[0]
        return self.mean.to(z) + self._gain(z, lam, alpha[:, None] * self.evals.to(z))

    def flow(self, z: Tensor, lam: float | Tensor) -> Tensor:
        """The exact probability-flow ODE solution from ``z`` at ``lam`` to the data end:
        the standardised coordinates ``(z - alpha mu)`` in the eigenbasis keep their z-score."""
        return self.mean.to(z) + self._gain(z, lam, self.evals.to(z).sqrt())

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        e = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.mean + (e * self.evals.sqrt()) @ self.evecs.T

    def conditional_mean(self, known_idx: Sequence[int], known_val: Tensor) -> Tensor:
        """``E[x_b | x_a = known_val]`` for the remaining coordinates b (Gaussian conditioning)."""
        a = torch.as_tensor(list(known_idx))
        b = torch.tensor([i for i in range(self.dim) if i not in set(a.tolist())])
        s_ba = self.cov[b][:, a]
        s_aa = self.cov[a][:, a]
        xa = torch.as_tensor(known_val, dtype=torch.float64).reshape(-1, a.numel())
        return self.mean[b] + (xa - self.mean[a]) @ torch.linalg.solve(s_aa, s_ba.T)


class GaussianMixture:
    """A mixture of Gaussians with an exact (class-)conditional denoiser.

    As a denoiser ``f(z, lam, cond)``: ``cond`` is None or a (B,) tensor of component
    labels, where label ``-1`` (the null label) means "any component" (the mixture).
    """

    def __init__(self, weights: Sequence[float], components: Sequence[Gaussian]) -> None:
        w = torch.as_tensor(weights, dtype=torch.float64)
        if w.numel() != len(components) or bool((w <= 0).any()):
            raise ValueError("need one positive weight per component")
        self.weights = w / w.sum()
        self.components = list(components)

    def _log_lik(self, z: Tensor, lam: Tensor) -> Tensor:
        """(B, K) log N(z; alpha mu_k, alpha^2 S_k + sigma^2 I)."""
        alpha, sigma = alpha_sigma(lam)
        out = []
        for c in self.components:
            r = (z - alpha[:, None] * c.mean.to(z)) @ c.evecs.to(z)
            var = alpha[:, None] ** 2 * c.evals.to(z) + sigma[:, None] ** 2  # no 1 - alpha^2 cancellation
            out.append(-0.5 * ((r**2 / var) + var.log() + math.log(2 * math.pi)).sum(1))
        return torch.stack(out, 1)

    def posterior(self, z: Tensor, lam: Tensor) -> Tensor:
        """(B, K) component probabilities given ``z`` at log-SNR ``lam``."""
        lam = as_batch(lam, z)
        return torch.softmax(self._log_lik(z, lam) + self.weights.to(z).log(), dim=1)

    def denoise(self, z: Tensor, lam: Tensor, cond: Tensor | None = None) -> Tensor:
        lam = as_batch(lam, z)
        means = torch.stack([c.denoise(z, lam) for c in self.components], 1)  # (B, K, d)
        p = self.posterior(z, lam)
        if cond is not None:
            cond = torch.as_tensor(cond, device=z.device).long()
            onehot = torch.nn.functional.one_hot(cond.clamp(min=0), len(self.components)).to(z)
            p = torch.where((cond >= 0)[:, None], onehot, p)
        return (p[:, :, None] * means).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` samples and their component labels."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        x = torch.stack([c.sample(n, generator) for c in self.components], 1)
        return x[torch.arange(n), k], k


# -- exact output statistics of a sampler, for convergence-order measurements --------------
def output_moments(
    sampler, denoiser, dim: int, lams: Tensor, dtype: torch.dtype = torch.float64, **kwargs
) -> tuple[Tensor, Tensor]:
    """Exact mean and covariance of ``sampler(denoiser, z, lams)`` for ``z ~ N(0, I)``.

    Valid whenever the sampler output is affine in the start noise and in every noise draw,
    which holds for all of difflab's samplers driven by an affine denoiser (e.g.
    :meth:`Gaussian.denoise`). One batched run computes the affine map: row 0 has all
    inputs zero, the next ``dim`` rows a unit start vector each, and each stochastic step k
    gets ``dim`` rows with a unit noise vector each. No Monte Carlo error.
    """
    steps = len(lams) - 1
    rows = 1 + dim + steps * dim
    eye = torch.eye(dim, dtype=dtype)
    z = torch.zeros(rows, dim, dtype=dtype)
    z[1 : 1 + dim] = eye
    calls = [0]

    def noise(like: Tensor) -> Tensor:
        k = calls[0]
        calls[0] += 1
        n = torch.zeros_like(like)
        n[1 + dim + k * dim : 1 + dim + (k + 1) * dim] = eye
        return n

    out = sampler(denoiser, z, lams, noise_sampler=noise, **kwargs)
    c = out[0]
    a = out[1 : 1 + dim + calls[0] * dim] - c
    return c, a.T @ a


def loglog_slope(steps: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of ``-log(error)`` against ``log(steps)``: the convergence order."""
    x = torch.log(torch.as_tensor(steps, dtype=torch.float64))
    y = -torch.log(torch.as_tensor(errors, dtype=torch.float64))
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc**2).sum())


def known_coordinates_experiment(
    known_value: float = 1.5,
    correlation: float = 0.95,
    weight: float = 2.0,
    steps: int = 100,
    n: int = 4000,
    seed: int = 0,
) -> dict[str, float]:
    """Sample ``x_b`` given ``x_a = known_value`` for 2-D Gaussian data with the exact denoiser,
    by replacement and by reconstruction guidance (Ho et al. 2022, section 3.1), with DDPM.

    Returns the true ``E[x_b | x_a]`` and each method's sample mean of ``x_b``: replacement
    ignores how ``x_a`` constrains ``x_b`` (its mean falls short of the truth); reconstruction
    guidance with weight ``w_r`` corrects ``x_hat_b`` with the gradient of the known part's error.
    """
    from .diffusion import CosineSchedule, ddpm, reconstruction_guidance, replacement

    data = Gaussian([0.0, 0.0], [[1.0, correlation], [correlation, 1.0]])
    known = torch.tensor([known_value, 0.0], dtype=torch.float64).expand(n, 2)
    mask = torch.tensor([True, False]).expand(n, 2)
    out = {"truth": data.conditional_mean([0], torch.tensor([known_value])).item()}
    methods = {
        "replacement": lambda g: replacement(data.denoise, known, mask, generator=g),
        "reconstruction": lambda g: reconstruction_guidance(data.denoise, known, mask, weight, generator=g),
    }
    for name, wrap in methods.items():
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, 2, generator=gen, dtype=torch.float64)
        x = ddpm(wrap(gen), z, CosineSchedule().lams(steps), generator=gen)
        if not torch.equal(x[:, 0], known[:, 0]):
            raise AssertionError(f"{name} changed the known coordinate")
        out[name] = x[:, 1].mean().item()
    return out
