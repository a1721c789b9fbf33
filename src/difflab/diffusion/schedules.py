"""Noise schedules written in log-SNR (docs/math.md sections 0 and 1).

A schedule maps continuous time ``t in [0, 1]`` to ``lam = log(alpha^2 / sigma^2)``
(decreasing in t) and back. Variance preserving: ``alpha^2 = sigmoid(lam)``,
``sigma^2 = sigmoid(-lam)``. A discrete-time model (1000 DDPM steps) is a schedule whose
``lam`` is known at ``t = i / N`` and interpolated in between; there is no step counter.

All arithmetic is done in float64 and returned in the input's floating dtype (float64
for Python numbers), so that conversions round-trip far below 1e-6.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from ._util import alpha_sigma, check_steps, choose

TimeLike = Tensor | float | Sequence[float]


def _as_f64(x: TimeLike) -> tuple[Tensor, torch.dtype]:
    """``x`` as a float64 tensor, and the dtype to return (the input's, float64 for Python numbers)."""
    if isinstance(x, Tensor) and x.is_floating_point():
        return x.to(torch.float64), x.dtype
    return torch.as_tensor(x, dtype=torch.float64), torch.float64


class Schedule(ABC):
    """Base class: subclasses define ``_lam`` and ``_t_of_lam`` on float64 tensors."""

    name: str = "schedule"

    @abstractmethod
    def _lam(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _t_of_lam(self, lam: Tensor) -> Tensor: ...

    # -- public API ---------------------------------------------------------------
    def lam(self, t: TimeLike) -> Tensor:
        """log-SNR at time ``t`` (scalar or tensor, every value in [0, 1])."""
        t64, dtype = _as_f64(t)
        if t64.numel() and not bool(((t64 >= 0) & (t64 <= 1)).all()):
            bad = t64[~((t64 >= 0) & (t64 <= 1))].flatten()[0].item()
            raise ValueError(f"t must lie in [0, 1]; got {bad}")
        return self._lam(t64).to(dtype)

    def t_of_lam(self, lam: TimeLike) -> Tensor:
        """Inverse of :meth:`lam`; ``lam`` must lie in ``[lam(1), lam(0)]``."""
        lam64, dtype = _as_f64(lam)
        lo, hi = self.lam_min, self.lam_max_t0
        ok = (lam64 >= lo - 1e-9 * max(1.0, abs(lo))) & (lam64 <= hi)
        if lam64.numel() and not bool(ok.all()):
            bad = lam64[~ok].flatten()[0].item()
            raise ValueError(f"lam must lie in [{lo:.6g}, {hi:.6g}] for this {self.name} schedule; got {bad}")
        return self._t_of_lam(lam64).clamp(0.0, 1.0).to(dtype)

    def alpha_sigma(self, t: TimeLike) -> tuple[Tensor, Tensor]:
        """``(alpha_t, sigma_t)`` with ``alpha^2 + sigma^2 = 1``."""
        return alpha_sigma(self.lam(t))

    def alpha(self, t: TimeLike) -> Tensor:
        return self.alpha_sigma(t)[0]

    def sigma(self, t: TimeLike) -> Tensor:
        return self.alpha_sigma(t)[1]

    @property
    def lam_min(self) -> float:
        """log-SNR at t = 1 (the noisiest point)."""
        return float(self._lam(torch.tensor(1.0, dtype=torch.float64)))

    @property
    def lam_max_t0(self) -> float:
        """log-SNR at t = 0 (may be +inf, for discrete-time schedules)."""
        return float(self._lam(torch.tensor(0.0, dtype=torch.float64)))

    @property
    def lam_max(self) -> float:
        """Largest *finite* log-SNR of the schedule (the clean end of a uniform-in-lam grid)."""
        return self.lam_max_t0

    def lams(
        self,
        steps: int,
        spacing: str = "t",
        t_start: float = 1.0,
        t_end: float | None = None,
        denoise_last: bool = True,
    ) -> Tensor:
        """A sampling grid: ``steps + 1`` log-SNR values from noisy (``t_start``) to clean.

        ``spacing`` is ``"t"`` (uniform in t) or ``"lam"`` (uniform in log-SNR). With
        ``denoise_last`` the final value is ``+inf``: the sampler's last step returns the
        denoiser's ``x_hat``. ``t_end`` defaults to 0 for ``"t"`` spacing and to the
        clean end with finite log-SNR for ``"lam"`` spacing.
        """
        check_steps(steps)
        choose("spacing", spacing, {"t": None, "lam": None})
        if spacing == "t":
            te = 0.0 if t_end is None else t_end
            grid = self.lam(torch.linspace(t_start, te, steps + 1, dtype=torch.float64))
        else:
            lo = float(self.lam(t_start))
            hi = self.lam_max if t_end is None else float(self.lam(t_end))
            if not math.isfinite(hi):
                raise ValueError("a uniform-in-lam grid needs a finite clean end: pass t_end > 0")
            grid = torch.linspace(lo, hi, steps + 1, dtype=torch.float64)
        if denoise_last:
            grid[-1] = math.inf
        return grid

    def sample_t(
        self,
        batch: int,
        mode: str = "continuous",
        n: int = 1000,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Training times: ``"continuous"`` ``t ~ U(0, 1]`` or ``"discrete"`` ``t = i / n``, i in {1..n}."""
        choose("time sampling mode", mode, {"continuous": None, "discrete": None})
        if mode == "continuous":
            u = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
            return 1.0 - u  # (0, 1]: t = 0 would have infinite log-SNR for discrete schedules
        check_steps(n)
        i = torch.randint(1, n + 1, (batch,), generator=generator, device=device)
        return i.to(torch.float64) / n


class CosineSchedule(Schedule):
    """Cosine schedule in its continuous form (Nichol & Dhariwal 2021; Salimans & Ho 2022).

    ``lam(t) = -2 log tan(a t + b) + shift`` with ``b = arctan(exp(-lam_max / 2))``,
    ``a = arctan(exp(-lam_min / 2)) - b``. The resolution shift of "simple diffusion"
    (Hoogeboom et al. 2023) is ``shift = 2 log(base_resolution / resolution)``.
    """

    name = "cosine"

    def __init__(
        self,
        lam_min: float = -20.0,
        lam_max: float = 20.0,
        resolution: int | None = None,
        base_resolution: int = 64,
    ) -> None:
        if not lam_min < lam_max:
            raise ValueError(f"lam_min must be below lam_max; got {lam_min} and {lam_max}")
        self.b = math.atan(math.exp(-lam_max / 2))
        self.a = math.atan(math.exp(-lam_min / 2)) - self.b
        self.shift = 0.0 if resolution is None else 2.0 * math.log(base_resolution / resolution)

    def _lam(self, t: Tensor) -> Tensor:
        return -2.0 * torch.log(torch.tan(self.a * t + self.b)) + self.shift

    def _t_of_lam(self, lam: Tensor) -> Tensor:
        return (torch.atan(torch.exp(-(lam - self.shift) / 2)) - self.b) / self.a


class BetaSchedule(Schedule):
    """Discrete-time schedule from any beta array (Ho et al. 2020; WaveGrad uses its own).

    ``alpha_bar_i = prod_{j <= i}(1 - beta_j)`` is known at ``t = i / N``; ``log alpha_bar``
    is interpolated linearly in t (a constant hazard inside each interval), with
    ``alpha_bar = 1`` (lam = +inf) at t = 0. Step index ``k`` of a 0-based
    implementation such as diffusers is ``t = (k + 1) / N``.
    """

    name = "betas"

    def __init__(self, betas: Sequence[float] | Tensor) -> None:
        b = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if b.numel() < 1 or not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("betas must be a non-empty array with every value in (0, 1)")
        self.betas = b
        self.n = b.numel()
        self.log_ab = torch.cat([b.new_zeros(1), torch.cumsum(torch.log1p(-b), 0)])  # t = i / N

    @property
    def alphas_cumprod(self) -> Tensor:
        return self.log_ab[1:].exp()

    def _log_ab(self, t: Tensor) -> Tensor:
        pos = t * self.n
        i = pos.floor().long().clamp(0, self.n - 1)
        frac = pos - i
        return self.log_ab[i] + frac * (self.log_ab[i + 1] - self.log_ab[i])

    def _lam(self, t: Tensor) -> Tensor:
        la = self._log_ab(t)
        return la - torch.log(-torch.expm1(la))

    def _t_of_lam(self, lam: Tensor) -> Tensor:
        la = torch.nn.functional.logsigmoid(lam)  # log alpha_bar, decreasing in t
        neg = -self.log_ab  # increasing
        i = torch.searchsorted(neg, (-la).contiguous(), right=True).clamp(1, self.n) - 1
        seg = neg[i + 1] - neg[i]
        frac = ((-la) - neg[i]) / seg
        return (i + frac) / self.n

    @property
    def lam_max(self) -> float:
        return float(self._lam(torch.tensor(1.0 / self.n, dtype=torch.float64)))


class LinearBetaSchedule(BetaSchedule):
    """DDPM's linear betas (Ho et al. 2020): ``beta_i`` from 1e-4 to 0.02 over 1000 steps."""

    name = "linear"

    def __init__(self, n: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        check_steps(n)
        super().__init__(torch.linspace(beta_start, beta_end, n, dtype=torch.float64))


class DiffusersSchedule(BetaSchedule):
    """The betas of a diffusers scheduler config (its ``num_train_timesteps``, ``beta_start``,
    ``beta_end``, ``beta_schedule`` and ``trained_betas``), computed in float32 as diffusers'
    DDPM / DDIM schedulers compute them, so ``DiffusersSchedule(**fields)`` equals
    ``BetaSchedule(scheduler.betas.double())`` without importing diffusers. diffusers' timestep
    ``k`` is ``t = (k + 1) / N`` (see docs/diffusion.md, "From diffusers").
    """

    name = "diffusers"
    BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Sequence[float] | None = None,
    ) -> None:
        n = int(num_train_timesteps)
        check_steps(n)
        f32 = torch.float32
        if trained_betas is not None:
            betas = torch.tensor(list(trained_betas), dtype=f32)
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, n, dtype=f32)
        elif beta_schedule == "scaled_linear":  # latent diffusion's
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=f32) ** 2
        elif beta_schedule == "squaredcos_cap_v2":  # Nichol & Dhariwal's discrete cosine, capped at 0.999
            abar = [math.cos((i / n + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(n + 1)]
            betas = torch.tensor([min(1 - abar[i + 1] / abar[i], 0.999) for i in range(n)], dtype=f32)
        elif beta_schedule == "sigmoid":  # GeoDiff's
            betas = torch.sigmoid(torch.linspace(-6, 6, n)) * (beta_end - beta_start) + beta_start
        else:
            raise ValueError(
                f"unknown beta_schedule {beta_schedule!r}; valid: {', '.join(self.BETA_SCHEDULES)} (or trained_betas)"
            )
        super().__init__(betas.double())


SCHEDULES = {
    "cosine": CosineSchedule, "linear": LinearBetaSchedule, "betas": BetaSchedule, "diffusers": DiffusersSchedule,
}  # fmt: skip


def get_schedule(name: str, **kwargs) -> Schedule:
    """Build a schedule by name: ``cosine``, ``linear``, ``betas`` (needs ``betas=...``) or ``diffusers``
    (the beta fields of a diffusers scheduler config)."""
    return choose("schedule", name, SCHEDULES)(**kwargs)
